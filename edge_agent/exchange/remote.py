"""The agent's calls to the coordinator's ExchangeService and AuditService over mTLS.

One channel, rebuilt when the site certificate is renewed. Failures raise silolink.errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from silolink.gen.exchange.v1 import exchange_pb2, exchange_pb2_grpc
from silolink.rpc.status import from_rpc_error

from ..identity import CoordinatorChannel, SiteIdentity

TIMEOUT_S = 30.0
# Large transfers get a generous deadline: 64 MiB at a slow 1 MB/s still fits.
TRANSFER_TIMEOUT_S = 3600.0


class CoordinatorExchange:
    def __init__(self, address: str, identity_loader, max_message_bytes: int) -> None:
        self._address = address
        self._load_identity = identity_loader
        self._channel = CoordinatorChannel(address, identity_loader, max_message_bytes)

    def identity(self) -> SiteIdentity:
        return self._load_identity()

    def _stubs(self) -> tuple[exchange_pb2_grpc.ExchangeServiceStub, audit_pb2_grpc.AuditServiceStub]:
        channel = self._channel.get()
        return exchange_pb2_grpc.ExchangeServiceStub(channel), audit_pb2_grpc.AuditServiceStub(channel)

    def close(self) -> None:
        self._channel.close()

    def _error(self, e: grpc.RpcError):
        return from_rpc_error(e, peer=f"the coordinator at {self._address}")

    def _call(self, name: str, request, audit: bool = False):
        stub = self._stubs()[1 if audit else 0]
        try:
            return getattr(stub, name)(request, timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def publish_key(self, key: exchange_pb2.SiteKey) -> bool:
        return not self._call("PublishSiteKey", exchange_pb2.PublishSiteKeyRequest(key=key)).unchanged

    def site_key(self, site: str) -> exchange_pb2.GetSiteKeyResponse:
        return self._call("GetSiteKey", exchange_pb2.GetSiteKeyRequest(site=site))

    def send(self, requests: Iterable[exchange_pb2.SendEnvelopesRequest]) -> Iterator[exchange_pb2.EnvelopeReceipt]:
        """Upload envelopes; yields each receipt as the coordinator commits it."""
        stub = self._stubs()[0]
        try:
            for response in stub.SendEnvelopes(iter(requests), timeout=TRANSFER_TIMEOUT_S):
                yield from response.receipts
        except grpc.RpcError as e:
            raise self._error(e) from None

    def inbox(self) -> list[exchange_pb2.InboxEntry]:
        return list(self._call("ListInbox", exchange_pb2.ListInboxRequest()).entries)

    def fetch(self, envelope_id: str) -> Iterator[exchange_pb2.FetchEnvelopeResponse]:
        stub = self._stubs()[0]
        try:
            yield from stub.FetchEnvelope(
                exchange_pb2.FetchEnvelopeRequest(envelope_id=envelope_id), timeout=TRANSFER_TIMEOUT_S
            )
        except grpc.RpcError as e:
            raise self._error(e) from None

    def ack(self, envelope_id: str) -> None:
        self._call("AckEnvelope", exchange_pb2.AckEnvelopeRequest(envelope_id=envelope_id))

    def agreements(self) -> list[exchange_pb2.Agreement]:
        return list(self._call("ListSiteAgreements", exchange_pb2.ListSiteAgreementsRequest()).agreements)

    def accept(self, agreement_id: str) -> exchange_pb2.Agreement:
        return self._call("AcceptAgreement", exchange_pb2.AcceptAgreementRequest(id=agreement_id)).agreement

    def audit_page(self, after_seq: int) -> audit_pb2.ListAuditEntriesResponse:
        return self._call("ListAuditEntries", audit_pb2.ListAuditEntriesRequest(after_seq=after_seq), audit=True)
