"""Calls to a running agent's exchange and audit services (for the CLI and site systems)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from silolink.cli_util import iso
from silolink.exchange_protos import agreement_to_dict, inbox_entry_to_dict
from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from silolink.gen.exchange.v1 import exchange_pb2, exchange_pb2_grpc
from silolink.protos import epoch

from ..client import LocalClient

TRANSFER_TIMEOUT_S = 3600.0


class LocalExchangeClient:
    def __init__(self, client: LocalClient) -> None:
        self._client = client
        self._exchange = exchange_pb2_grpc.LocalExchangeServiceStub(client.channel)
        self._audit = audit_pb2_grpc.LocalAuditServiceStub(client.channel)

    def send(self, path: Path, recipient: str, purpose: str, ttl_s: int = 0) -> dict[str, Any]:
        request = exchange_pb2.SendFileRequest(
            path=str(Path(path).resolve()), recipient=recipient, purpose=purpose, ttl_s=ttl_s
        )
        reply = self._client.call(self._exchange.SendFile, request, timeout_s=TRANSFER_TIMEOUT_S)
        return {
            "envelope_id": reply.envelope_id,
            "to": recipient,
            "purpose": purpose,
            "size": reply.size,
            "suite": reply.suite,
            "expires_at": iso(epoch(reply, "expires_at")),
        }

    def inbox(self) -> list[dict[str, Any]]:
        reply = self._client.call(self._exchange.ListLocalInbox, exchange_pb2.ListLocalInboxRequest())
        return [inbox_entry_to_dict(e) for e in reply.entries]

    def receive(self, envelope_id: str, output: Path | None = None) -> dict[str, Any]:
        request = exchange_pb2.ReceiveEnvelopeRequest(
            envelope_id=envelope_id, output_path=str(Path(output).resolve()) if output else ""
        )
        r = self._client.call(self._exchange.ReceiveEnvelope, request, timeout_s=TRANSFER_TIMEOUT_S)
        return {
            "envelope_id": r.envelope_id,
            "from": r.sender,
            "purpose": r.purpose,
            "path": r.path,
            "size": r.size,
            "sha256": r.sha256,
            "duplicate": r.duplicate,
        }

    def agreements(self) -> list[dict[str, Any]]:
        reply = self._client.call(self._exchange.ListLocalAgreements, exchange_pb2.ListLocalAgreementsRequest())
        return [agreement_to_dict(a) for a in reply.agreements]

    def accept(self, agreement_id: str) -> dict[str, Any]:
        reply = self._client.call(
            self._exchange.AcceptLocalAgreement, exchange_pb2.AcceptLocalAgreementRequest(id=agreement_id)
        )
        return agreement_to_dict(reply.agreement)

    def keys(self) -> list[dict[str, Any]]:
        reply = self._client.call(self._exchange.ListKeys, exchange_pb2.ListKeysRequest())
        return [_key(k) for k in reply.keys]

    def rotate_key(self, suite: str = "") -> dict[str, Any]:
        return _key(self._client.call(self._exchange.RotateKey, exchange_pb2.RotateKeyRequest(suite=suite)).key)

    def verify_audit(self) -> dict[str, Any]:
        r = self._client.call(self._audit.VerifyAuditChain, audit_pb2.VerifyAuditChainRequest(), timeout_s=300)
        return {
            "ok": True,
            "entries": r.entries,
            "head_seq": r.head_seq,
            "head_hash": r.head_hash,
            "remembered_seq": r.remembered_seq,
            "public_key": r.public_key,
        }


def _key(k: exchange_pb2.LocalKey) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "suite": k.suite,
        "created_at": iso(epoch(k, "created_at")),
        "current": k.current,
        "published": k.published,
    }
