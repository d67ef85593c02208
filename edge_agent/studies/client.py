"""Calls to a running agent's LocalStudyService (for the CLI and site systems)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc

from ..client import LocalClient
from .service import STATES


def local_study_to_dict(study: pb.LocalStudy) -> dict[str, Any]:
    allowance = None
    if study.HasField("allowance"):
        allowance = MessageToDict(
            study.allowance, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    return {
        "study": study.study,
        "description": study.description,
        "state": STATES.get(study.state, "none"),
        "allowance": allowance,
        "budgets": [
            MessageToDict(b, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for b in study.budgets
        ],
    }


class LocalStudiesClient:
    def __init__(self, client: LocalClient) -> None:
        self._client = client
        self._stub = studies_pb2_grpc.LocalStudyServiceStub(client.channel)

    def list(self) -> tuple[list[dict[str, Any]], str]:
        reply = self._client.call(self._stub.ListLocalStudies, pb.ListLocalStudiesRequest())
        return [local_study_to_dict(s) for s in reply.studies], reply.coordinator_error

    def accept(self, study: str, allowance: pb.Allowance | None) -> dict[str, Any]:
        request = pb.AcceptLocalStudyRequest(study=study, allowance=allowance)
        return local_study_to_dict(self._client.call(self._stub.AcceptLocalStudy, request).study)

    def leave(self, study: str) -> dict[str, Any]:
        request = pb.LeaveLocalStudyRequest(study=study)
        return local_study_to_dict(self._client.call(self._stub.LeaveLocalStudy, request).study)
