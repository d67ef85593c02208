"""The agent's calls to the coordinator's SiteStudyService over mTLS (the site is its certificate)."""

from __future__ import annotations

import grpc

from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.rpc.status import from_rpc_error

from ..identity import CoordinatorChannel

TIMEOUT_S = 15.0


class CoordinatorStudies:
    def __init__(self, address: str, identity_loader, max_message_bytes: int) -> None:
        self._address = address
        self._channel = CoordinatorChannel(address, identity_loader, max_message_bytes)

    def _stub(self) -> studies_pb2_grpc.SiteStudyServiceStub:
        return studies_pb2_grpc.SiteStudyServiceStub(self._channel.get())

    def close(self) -> None:
        self._channel.close()

    def _call(self, name: str, request):
        try:
            return getattr(self._stub(), name)(request, timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self._address}") from None

    def invitations(self) -> list[pb.SiteInvitation]:
        return list(self._call("ListSiteStudies", pb.ListSiteStudiesRequest()).studies)

    def accept(self, study: str, share: pb.ComputeShare) -> pb.SiteInvitation:
        return self._call("AcceptStudy", pb.AcceptStudyRequest(study=study, share=share)).study

    def leave(self, study: str) -> pb.SiteInvitation:
        return self._call("LeaveStudy", pb.LeaveStudyRequest(study=study)).study

    def report_budgets(self, studies: list[pb.StudyBudgets]) -> None:
        self._call("ReportBudgets", pb.ReportBudgetsRequest(studies=studies))
