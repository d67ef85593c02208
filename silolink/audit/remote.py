"""Verify the chain from outside the coordinator (operator CLI, agents): fetch every page
over the AuditService, check links and signatures, and check that a head seen earlier is
still in it. No gRPC here: the caller passes the function that fetches a page."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from silolink import errors
from silolink.gen.audit.v1 import audit_pb2

from .chain import AuditEntry, verify

PageFetcher = Callable[[int], audit_pb2.ListAuditEntriesResponse]


def entry_to_proto(entry: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        subject=entry.subject,
        details_json=json.dumps(entry.details, sort_keys=True),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
        signature=entry.signature,
    )


def entry_from_proto(message: audit_pb2.AuditEntry) -> AuditEntry:
    return AuditEntry(
        seq=message.seq,
        at=message.at,
        actor=message.actor,
        action=message.action,
        subject=message.subject,
        details=json.loads(message.details_json or "{}"),
        prev_hash=message.prev_hash,
        hash=message.hash,
        signature=message.signature,
    )


@dataclass(frozen=True)
class VerifiedChain:
    entries: list[AuditEntry]
    head_seq: int
    head_hash: str
    public_key: bytes


def fetch_all(fetch_page: PageFetcher, after_seq: int = 0) -> tuple[list[AuditEntry], bytes]:
    """Every entry after ``after_seq`` and the public key the coordinator reports."""
    entries: list[AuditEntry] = []
    public_key = b""
    while True:
        page = fetch_page(after_seq)
        public_key = page.public_key
        if not page.entries:
            return entries, public_key
        entries += [entry_from_proto(e) for e in page.entries]
        after_seq = entries[-1].seq


def check_chain(
    entries: list[AuditEntry],
    public_key: bytes,
    pinned_key: bytes | None = None,
    remembered: tuple[int, str] | None = None,
    pinned_by: str = "this site",
) -> VerifiedChain:
    """Verify a whole chain fetched from genesis; raise FailedPrecondition naming the break.

    ``pinned_by`` names who pinned the key and remembered the head, for the messages.
    """
    if pinned_key is not None and public_key != pinned_key:
        raise errors.FailedPrecondition(
            f"the coordinator's audit key is not the one {pinned_by} pinned: the chain cannot be trusted"
        )
    if entries and entries[0].seq != 1:
        raise errors.FailedPrecondition("audit chain broken: its first entries are missing")
    key = Ed25519PublicKey.from_public_bytes(pinned_key or public_key)
    head_hash = verify(entries, key)
    if remembered is not None and remembered[0] > 0:
        seq, digest = remembered
        if seq > len(entries):
            raise errors.FailedPrecondition(
                f"audit chain broken: entry {seq}, which {pinned_by} saw before, has been deleted"
            )
        if entries[seq - 1].hash != digest:
            raise errors.FailedPrecondition(
                f"audit chain broken: entry {seq} no longer has the hash {pinned_by} saw; the chain was rewritten"
            )
    return VerifiedChain(entries, entries[-1].seq if entries else 0, head_hash, pinned_key or public_key)


def check_continuation(
    entries: list[AuditEntry], public_key: bytes, pinned_key: bytes, remembered: tuple[int, str]
) -> tuple[int, str]:
    """Verify the entries after a remembered head; return the new head to remember.

    Entries of a batch whose signature has not arrived yet (none: batches are written in
    one transaction) would fail; the caller then keeps its old head.
    """
    if public_key != pinned_key:
        raise errors.FailedPrecondition(
            "the coordinator's audit key is not the one this site pinned: the chain cannot be trusted"
        )
    if not entries:
        return remembered
    if entries[0].seq != remembered[0] + 1:
        raise errors.FailedPrecondition(f"audit chain broken: entry {remembered[0] + 1} is missing")
    head = verify(entries, Ed25519PublicKey.from_public_bytes(pinned_key), start_prev_hash=remembered[1])
    return entries[-1].seq, head
