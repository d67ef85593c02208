"""LocalExchangeService and LocalAuditService on the agent's local API: unpack, call, pack."""

from __future__ import annotations

from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from silolink.gen.exchange.v1 import exchange_pb2, exchange_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.server import ServiceMount

from .audit import AuditWatcher
from .keys import StoredKey
from .service import SiteExchange


def _local_key(key: StoredKey, current: bool, published_id: str) -> exchange_pb2.LocalKey:
    return exchange_pb2.LocalKey(
        key_id=key.key_id,
        suite=key.pair.suite,
        created_at=timestamp(key.created_at_ms / 1000),
        current=current,
        published=key.key_id == published_id or (not current and key.retired_at is not None),
    )


class LocalExchangeServicer(exchange_pb2_grpc.LocalExchangeServiceServicer):
    def __init__(self, exchange: SiteExchange) -> None:
        self._exchange = exchange

    def SendFile(self, request, context):
        result = self._exchange.send_file(request.path, request.recipient, request.purpose, request.ttl_s)
        return exchange_pb2.SendFileResponse(
            envelope_id=result.envelope_id,
            size=result.size,
            suite=result.suite,
            expires_at=timestamp(result.expires_at),
        )

    def ListLocalInbox(self, request, context):
        return exchange_pb2.ListLocalInboxResponse(entries=self._exchange.inbox())

    def ReceiveEnvelope(self, request, context):
        r = self._exchange.receive(request.envelope_id, request.output_path)
        return exchange_pb2.ReceiveEnvelopeResponse(
            envelope_id=r.envelope_id,
            sender=r.sender,
            purpose=r.purpose,
            path=r.path,
            size=r.size,
            sha256=r.sha256,
            duplicate=r.duplicate,
        )

    def ListLocalAgreements(self, request, context):
        return exchange_pb2.ListLocalAgreementsResponse(agreements=self._exchange.agreements())

    def AcceptLocalAgreement(self, request, context):
        return exchange_pb2.AcceptLocalAgreementResponse(agreement=self._exchange.accept(request.id))

    def ListKeys(self, request, context):
        keys = self._exchange.keys.keys()
        published = self._exchange.published_key_id()
        current = next((k.key_id for k in keys if k.retired_at is None), "")
        return exchange_pb2.ListKeysResponse(keys=[_local_key(k, k.key_id == current, published) for k in keys])

    def RotateKey(self, request, context):
        key = self._exchange.rotate_key(request.suite)
        return exchange_pb2.RotateKeyResponse(key=_local_key(key, True, key.key_id))


class LocalAuditServicer(audit_pb2_grpc.LocalAuditServiceServicer):
    def __init__(self, watcher: AuditWatcher) -> None:
        self._watcher = watcher

    def VerifyAuditChain(self, request, context):
        head, entries, remembered = self._watcher.verify()
        return audit_pb2.VerifyAuditChainResponse(
            entries=entries,
            head_seq=head.seq,
            head_hash=head.hash,
            remembered_seq=remembered,
            public_key=head.public_key.hex(),
        )


def mounts(exchange: SiteExchange, watcher: AuditWatcher) -> list[ServiceMount]:
    local = LocalExchangeServicer(exchange)
    audit = LocalAuditServicer(watcher)
    return [
        ServiceMount(
            name=exchange_pb2.DESCRIPTOR.services_by_name["LocalExchangeService"].full_name,
            register=lambda s: exchange_pb2_grpc.add_LocalExchangeServiceServicer_to_server(local, s),
            rules={
                name: {Role.LOCAL}
                for name in (
                    "SendFile",
                    "ListLocalInbox",
                    "ReceiveEnvelope",
                    "ListLocalAgreements",
                    "AcceptLocalAgreement",
                    "ListKeys",
                    "RotateKey",
                )
            },
        ),
        ServiceMount(
            name=audit_pb2.DESCRIPTOR.services_by_name["LocalAuditService"].full_name,
            register=lambda s: audit_pb2_grpc.add_LocalAuditServiceServicer_to_server(audit, s),
            rules={"VerifyAuditChain": {Role.LOCAL}},
        ),
    ]
