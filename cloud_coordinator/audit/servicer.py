"""AuditService: the chain, page by page, with the public key that verifies it."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from silolink.audit.remote import entry_to_proto
from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from silolink.identity import Role
from silolink.rpc.server import ServiceMount

from .store import AuditLog

PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._public = log.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def ListAuditEntries(self, request, context):
        limit = min(request.limit or PAGE_SIZE, MAX_PAGE_SIZE)
        head = self._log.head()
        entries = self._log.entries(after_seq=request.after_seq, limit=limit)
        return audit_pb2.ListAuditEntriesResponse(
            entries=[entry_to_proto(e) for e in entries], head_seq=head.seq if head else 0, public_key=self._public
        )


def mount(log: AuditLog) -> ServiceMount:
    servicer = AuditServicer(log)
    return ServiceMount(
        name=audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
        register=lambda server: audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server),
        rules={"ListAuditEntries": {Role.VIEWER, Role.AGENT}},
    )
