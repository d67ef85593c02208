"""QueueService: the queue as operators see it (thin over WorkQueue)."""

from __future__ import annotations

from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .service import WorkQueue


class QueueServicer(studies_pb2_grpc.QueueServiceServicer):
    def __init__(self, queue: WorkQueue, studies) -> None:
        self._queue = queue
        self._studies = studies

    def ListQueue(self, request, context):
        caller = current_identity()
        visible = {s.name for s in self._studies.list(caller)}  # only studies the caller may see
        waiting, running, shares = self._queue.snapshot()
        work = []
        for w in waiting:
            if w.study not in visible:
                continue
            needs = self._queue.needs_of(w.job_id)
            work.append(self._work(w.job_id, w.study, "queued", needs, position=w.position, reason=w.reason,
                                   next_change_at=timestamp(w.next_change_at)))  # fmt: skip
        for p in running:
            if p.study in visible:
                work.append(self._work(p.job_id, p.study, "running", self._queue.needs_of(p.job_id), sites=p.sites))
        weights = self._studies.weights()
        return pb.ListQueueResponse(
            work=work,
            shares=[
                pb.StudyShareOfFleet(study=s, dominant_share=v, weight=weights.get(s, 1.0))
                for s, v in sorted(shares.items())
                if s in visible
            ],
        )

    @staticmethod
    def _work(job_id, study, state, needs, **kw) -> pb.QueuedWork:
        work = pb.QueuedWork(job_id=job_id, study=study, state=state, **kw)
        if needs is not None:
            work.cpu, work.memory_bytes, work.gpus = needs.cpu, needs.memory_bytes, needs.gpus
            work.min_sites, work.expected_duration_s = needs.min_sites, needs.duration_s
            work.submitted_at.CopyFrom(timestamp(needs.submitted_at))
        return work


def mount(queue: WorkQueue, studies) -> ServiceMount:
    servicer = QueueServicer(queue, studies)
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["QueueService"].full_name,
        register=lambda s: studies_pb2_grpc.add_QueueServiceServicer_to_server(servicer, s),
        rules={"ListQueue": {Role.VIEWER}},
    )
