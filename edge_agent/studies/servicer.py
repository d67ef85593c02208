"""LocalStudyService on the agent's local API: the site admin's studies commands."""

from __future__ import annotations

from typing import Any

from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.identity import Role
from silolink.rpc.server import ServiceMount

from .allowance import Allowance, Share
from .service import SiteStudies

STATES = {
    "invited": pb.MEMBERSHIP_STATE_INVITED,
    "accepted": pb.MEMBERSHIP_STATE_ACCEPTED,
    "left": pb.MEMBERSHIP_STATE_LEFT,
}


def allowance_to_proto(allowance: dict[str, Any] | None) -> pb.Allowance | None:
    if allowance is None:
        return None
    share = allowance["share"]
    return pb.Allowance(
        **{k: v for k, v in allowance.items() if k != "share"},
        share=pb.ComputeShare(**{**share, "windows": list(share["windows"])}),
    )


def allowance_from_proto(message: pb.Allowance) -> Allowance:
    s = message.share
    return Allowance(
        datasets=tuple(message.datasets), apps=tuple(message.apps), query_kinds=tuple(message.query_kinds),
        min_cohort=message.min_cohort, epsilon_budget=message.epsilon_budget,
        delta_budget=message.delta_budget if message.delta_budget else 1e-5, query_epsilon=message.query_epsilon,
        share_budget=message.share_budget, models=message.models, exchange=message.exchange,
        share=Share(max_jobs=s.max_jobs, cpu=s.cpu, memory_bytes=s.memory_bytes, gpus=s.gpus, windows=tuple(s.windows),
                    utc_offset_s=s.utc_offset_s, cpu_hours_per_day=s.cpu_hours_per_day),
    )  # fmt: skip


def local_study(entry: dict[str, Any]) -> pb.LocalStudy:
    return pb.LocalStudy(
        study=entry["study"],
        description=entry.get("description", ""),
        state=STATES.get(entry["state"], pb.MEMBERSHIP_STATE_UNSPECIFIED),
        allowance=allowance_to_proto(entry["allowance"]),
        budgets=[
            pb.BudgetReport(dataset=b["dataset"], epsilon_budget=b["epsilon_budget"] or 0.0,
                            epsilon_spent=b["epsilon_spent"], delta_budget=b["delta_budget"] or 0.0,
                            delta_spent=b["delta_spent"])
            for b in entry["budgets"]
        ],
    )  # fmt: skip


class LocalStudyServicer(studies_pb2_grpc.LocalStudyServiceServicer):
    def __init__(self, studies: SiteStudies) -> None:
        self._studies = studies

    def ListLocalStudies(self, request, context):
        entries, problem = self._studies.list()
        return pb.ListLocalStudiesResponse(studies=[local_study(e) for e in entries], coordinator_error=problem)

    def AcceptLocalStudy(self, request, context):
        allowance = allowance_from_proto(request.allowance) if request.HasField("allowance") else None
        return pb.AcceptLocalStudyResponse(study=local_study(self._studies.accept(request.study, allowance)))

    def LeaveLocalStudy(self, request, context):
        return pb.LeaveLocalStudyResponse(study=local_study(self._studies.leave(request.study)))


def mount(studies: SiteStudies) -> ServiceMount:
    servicer = LocalStudyServicer(studies)
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["LocalStudyService"].full_name,
        register=lambda s: studies_pb2_grpc.add_LocalStudyServiceServicer_to_server(servicer, s),
        rules={name: {Role.LOCAL} for name in ("ListLocalStudies", "AcceptLocalStudy", "LeaveLocalStudy")},
    )
