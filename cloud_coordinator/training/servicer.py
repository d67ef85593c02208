"""TrainingService (operators) and JobRunnerService (the coordinator's job processes)."""

from __future__ import annotations

import math

import grpc

from silolink import errors
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.gen.training.v1 import training_pb2_grpc
from silolink.identity import Role
from silolink.paging import page_bounds
from silolink.protos import config_from_proto, config_to_proto, timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .jobs import JobService, node_id
from .store import Job, JobSpec, RoundRecord

STATE_TO_PROTO = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "completed": pb.JOB_STATE_COMPLETED,
    "failed": pb.JOB_STATE_FAILED,
    "stopped": pb.JOB_STATE_STOPPED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}
SPEC_FIELDS = ("rounds", "strategy", "min_sites", "round_timeout_s", "local_epochs", "learning_rate", "proximal_mu",
               "server_learning_rate", "dp_noise_multiplier", "dp_clipping_norm", "model_name", "secure_aggregation",
               "app_version", "timeout_s", "study", "cpu", "memory_bytes", "gpus", "expected_duration_s", "priority",
               "max_sites", "privacy_noise_multiplier", "privacy_rounds", "privacy_delta")  # fmt: skip


def spec_from_proto(spec: pb.JobSpec) -> JobSpec:
    """The request as given: zero or empty settings mean "the app's default"."""
    for field in ("round_timeout_s", "learning_rate", "proximal_mu", "server_learning_rate", "dp_noise_multiplier",
                  "dp_clipping_norm", "timeout_s", "cpu", "expected_duration_s", "privacy_noise_multiplier",
                  "privacy_delta"):  # fmt: skip
        if not math.isfinite(getattr(spec, field)):
            raise errors.InvalidArgument(f"{field} must be a finite number")
    return JobSpec(
        app=spec.app,
        dataset=spec.dataset,
        sites=tuple(spec.sites),
        hidden_units=tuple(spec.hidden_units),
        run_config=config_from_proto(spec.run_config),
        **{f: getattr(spec, f) for f in SPEC_FIELDS},
    )


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(
        app=spec.app,
        dataset=spec.dataset,
        sites=spec.sites,
        hidden_units=spec.hidden_units,
        run_config=config_to_proto(spec.run_config),
        **{f: getattr(spec, f) for f in SPEC_FIELDS},
    )


def round_to_proto(r: RoundRecord) -> pb.RoundRecord:
    return pb.RoundRecord(
        round=r.round,
        participants=r.participants,
        excluded=[
            pb.Exclusion(site=e["site"], reason=e["reason"], message_type=e.get("message_type", "")) for e in r.excluded
        ],  # fmt: skip
        train_metrics=r.train_metrics,
        eval_metrics=r.eval_metrics,
        server_metrics=r.server_metrics,
        duration_s=r.duration_s,
    )


def round_from_proto(r: pb.RoundRecord) -> RoundRecord:
    return RoundRecord(
        round=r.round,
        participants=list(r.participants),
        excluded=[{"site": e.site, "reason": e.reason, "message_type": e.message_type} for e in r.excluded],
        train_metrics=dict(r.train_metrics),
        eval_metrics=dict(r.eval_metrics),
        duration_s=r.duration_s,
        server_metrics=dict(r.server_metrics),
    )


def job_to_proto(job: Job) -> pb.Job:
    return pb.Job(
        id=job.id,
        spec=spec_to_proto(job.spec),
        state=STATE_TO_PROTO[job.state],
        rounds=[round_to_proto(r) for r in job.rounds],
        error=job.error,
        model=job.model,
        dp_epsilon=job.dp_epsilon or 0.0,
        dp_delta=job.dp_delta or 0.0,
        created_by=job.created_by,
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        resumed=job.resumed,
        app_version=job.app_version,
        app_sha256=job.app_sha256,
        run_config=config_to_proto(job.run_config),
        resumed_from_round=job.resumed_from_round,
        published_models=job.published_models,
        queue_position=job.queue_position,
        queue_reason=job.queue_reason,
        placed_sites=job.placed_sites,
    )


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    def StartJob(self, request: pb.StartJobRequest, context: grpc.ServicerContext):
        job = self._jobs.start(spec_from_proto(request.spec), current_identity())
        return pb.StartJobResponse(job=job_to_proto(job))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext):
        return pb.GetJobResponse(job=job_to_proto(self._jobs.get(request.id)))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext):
        state = STATE_FROM_PROTO.get(request.state, "") if request.state else ""
        offset = page_bounds(0, request.page_token, 0)[0]
        jobs, total, counts = self._jobs.page(state, request.dataset, offset, request.page_size or None)
        end = offset + len(jobs)
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in jobs],
            next_page_token=str(end) if request.page_size and end < total else "",
            total_size=total,
            state_counts=[
                pb.JobStateCount(state=proto, count=counts.get(name, 0)) for name, proto in STATE_TO_PROTO.items()
            ],
        )

    def StopJob(self, request: pb.StopJobRequest, context: grpc.ServicerContext):
        return pb.StopJobResponse(job=job_to_proto(self._jobs.stop(request.id, actor=str(current_identity()))))

    def ReadJobLogs(self, request: pb.ReadJobLogsRequest, context: grpc.ServicerContext):
        data, next_offset, complete = self._jobs.read_logs(request.id, request.offset, request.max_bytes)
        return pb.ReadJobLogsResponse(data=data, next_offset=next_offset, complete=complete)


class JobRunnerServicer(training_pb2_grpc.JobRunnerServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        return pb.ListNodesResponse(nodes=[pb.Node(node_id=n, site=s) for n, s in self._jobs.nodes(job)])

    def Exchange(self, request: pb.ExchangeRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        if not request.timeout_s > 0 or not math.isfinite(request.timeout_s):
            raise errors.InvalidArgument("timeout_s must be a positive number")
        return pb.ExchangeResponse(message=self._jobs.exchange(job, request.site, request.message, request.timeout_s))

    def FinishJob(self, request: pb.FinishJobRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        return pb.FinishJobResponse(job=job_to_proto(self._jobs.finish(job, request.model_path)))

    def DescribeRun(self, request: pb.DescribeRunRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        bundle_path, serverapp = self._jobs.describe_run(job)
        return pb.DescribeRunResponse(
            job=job_to_proto(job), bundle_path=bundle_path, serverapp=serverapp, run_id=node_id(job.id)
        )

    def RecordRound(self, request: pb.RecordRoundRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        privacy = (request.round.dp_epsilon, request.round.dp_delta) if request.round.dp_delta > 0 else None
        self._jobs.record_round(job, round_from_proto(request.round), privacy)
        return pb.RecordRoundResponse()

    def PublishModel(self, request: pb.PublishModelRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        model = self._jobs.publish(job, request.model_path, request.name, request.description)
        return pb.PublishModelResponse(model=model)

    def FailJob(self, request: pb.FailJobRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        return pb.FailJobResponse(job=job_to_proto(self._jobs.fail(job, request.reason or "the job process failed")))


def operator_mount(servicer: TrainingServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["TrainingService"].full_name,
        register=lambda server: training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server),
        rules={
            "StartJob": {Role.OPERATOR},
            "StopJob": {Role.OPERATOR},
            "GetJob": {Role.VIEWER},
            "ListJobs": {Role.VIEWER},
            "ReadJobLogs": {Role.VIEWER},
        },
    )


def runner_mount(servicer: JobRunnerServicer) -> ServiceMount:
    methods = ("ListNodes", "Exchange", "FinishJob", "DescribeRun", "RecordRound", "PublishModel", "FailJob")
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["JobRunnerService"].full_name,
        register=lambda server: training_pb2_grpc.add_JobRunnerServiceServicer_to_server(servicer, server),
        rules={m: {Role.LOCAL} for m in methods},
    )
