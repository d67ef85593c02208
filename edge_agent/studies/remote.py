"""The agent's calls to the coordinator's SiteStudyService over mTLS (the site is its certificate)."""

from __future__ import annotations

import threading

import grpc

from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.rpc.channels import mtls_channel
from silolink.rpc.status import from_rpc_error

TIMEOUT_S = 15.0


class CoordinatorStudies:
    def __init__(self, address: str, identity_loader, max_message_bytes: int) -> None:
        self._address = address
        self._load_identity = identity_loader
        self._max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._serial = ""
        self._channel: grpc.Channel | None = None

    def _stub(self) -> studies_pb2_grpc.SiteStudyServiceStub:
        identity = self._load_identity()
        serial = format(identity.cert.serial_number, "x")
        with self._lock:
            if self._channel is None or serial != self._serial:  # renewed: a channel with the new certificate
                if self._channel is not None:
                    self._channel.close()
                self._channel = mtls_channel(self._address, identity.credentials, self._max_message_bytes)
                self._serial = serial
            return studies_pb2_grpc.SiteStudyServiceStub(self._channel)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

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
