"""The operator's client for studies (the CLI and the demo use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from silolink.cli_util import iso
from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.protos import epoch

from ..operator_client import OperatorClient
from ..sites import selector as selector_mod
from .servicer import ROLE_NAMES, ROLES

STATE_NAMES = {
    pb.MEMBERSHIP_STATE_INVITED: "invited",
    pb.MEMBERSHIP_STATE_ACCEPTED: "accepted",
    pb.MEMBERSHIP_STATE_LEFT: "left",
}


def _plain(message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def study_to_dict(study: pb.Study) -> dict[str, Any]:
    return {
        "name": study.name,
        "description": study.description,
        "weight": study.weight,
        "created_by": study.created_by or None,
        "created_at": iso(epoch(study, "created_at")),
        "sites": [
            {
                "site": s.site,
                "state": STATE_NAMES.get(s.state, "unknown"),
                "invited_at": iso(epoch(s, "invited_at")),
                "updated_at": iso(epoch(s, "updated_at")),
                "share": _plain(s.share) if s.state == pb.MEMBERSHIP_STATE_ACCEPTED else None,
                "budgets": [_plain(b) for b in s.budgets],
            }
            for s in study.sites
        ],
        "members": {m.account: ROLE_NAMES.get(m.role, "none") for m in study.members},
    }


class StudiesClient:
    """Typed calls to StudyService over an operator's channel; failures raise silolink.errors."""

    def __init__(self, operator: OperatorClient) -> None:
        self._operator = operator
        self._stub = studies_pb2_grpc.StudyServiceStub(operator.channel)

    def create(self, name: str, description: str = "", weight: float = 0.0) -> dict[str, Any]:
        request = pb.CreateStudyRequest(name=name, description=description, weight=weight)
        return study_to_dict(self._operator.call(self._stub.CreateStudy, request).study)

    def invite(self, name: str, sites: Sequence[str]) -> dict[str, Any]:
        selectors = [selector_mod.parse(s) for s in sites]
        reply = self._operator.call(self._stub.InviteSites, pb.InviteSitesRequest(study=name, sites=selectors))
        return {**study_to_dict(reply.study), "invited": list(reply.invited)}

    def list(self) -> list[dict[str, Any]]:
        return [study_to_dict(s) for s in self._operator.call(self._stub.ListStudies, pb.ListStudiesRequest()).studies]

    def get(self, name: str) -> dict[str, Any]:
        return study_to_dict(self._operator.call(self._stub.GetStudy, pb.GetStudyRequest(name=name)).study)

    def set_role(self, name: str, account: str, role: str | None) -> dict[str, Any]:
        request = pb.SetStudyRoleRequest(study=name, account=account, role=ROLES[role] if role else 0)
        return study_to_dict(self._operator.call(self._stub.SetStudyRole, request).study)


def queue_to_dict(reply: pb.ListQueueResponse) -> dict[str, Any]:
    return {
        "work": [
            {
                "job": w.job_id,
                "study": w.study,
                "state": w.state,
                "position": w.position or None,
                "reason": w.reason or None,
                "next_change_at": iso(epoch(w, "next_change_at")),
                "sites": list(w.sites),
                "submitted_at": iso(epoch(w, "submitted_at")),
                "needs": {
                    "cpu": w.cpu,
                    "memory_bytes": w.memory_bytes,
                    "gpus": w.gpus,
                    "min_sites": w.min_sites,
                    "expected_duration_s": w.expected_duration_s,
                },
            }
            for w in reply.work
        ],
        "shares": {s.study: {"dominant_share": s.dominant_share, "weight": s.weight} for s in reply.shares},
    }


class QueueClient:
    """The coordinator's work queue, as the operator may see it."""

    def __init__(self, operator: OperatorClient) -> None:
        self._operator = operator
        self._stub = studies_pb2_grpc.QueueServiceStub(operator.channel)

    def list(self) -> dict[str, Any]:
        return queue_to_dict(self._operator.call(self._stub.ListQueue, pb.ListQueueRequest()))
