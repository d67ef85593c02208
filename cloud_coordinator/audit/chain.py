"""Hash chain and signatures for audit entries; no storage, no gRPC.

Each entry's hash covers its content and the previous entry's hash, so editing, deleting
or reordering any entry breaks every hash after it; each hash is signed with the
coordinator's Ed25519 audit key (kept apart from the CA key), so the chain cannot be
rewritten from scratch without that key. Anyone holding the public key can verify.

Entries appended together (a batch of envelopes committed at once) are signed once: only
the batch's last entry carries a signature, and because every hash covers its
predecessor's, that one signature commits to the whole batch. A run of entries verifies
only if each one is followed by a signed entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from silolink import errors

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One recorded action. ``details`` holds names, ids and digests, never data."""

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""
    signature: str = ""

    def content(self) -> bytes:
        # Spelled out rather than dataclasses.asdict, which deep-copies and dominated the
        # cost of recording a batch of envelopes.
        body = {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(entry: AuditEntry, key: Ed25519PrivateKey | None) -> AuditEntry:
    """``entry`` with its hash filled in, and its signature unless ``key`` is None (an
    entry inside a batch, covered by the batch's last signature)."""
    digest = hashlib.sha256(entry.content()).hexdigest()
    signature = key.sign(bytes.fromhex(digest)).hex() if key is not None else ""
    return replace(entry, hash=digest, signature=signature)


def verify(entries: Iterable[AuditEntry], public_key: Ed25519PublicKey, start_prev_hash: str = GENESIS) -> str:
    """Check a contiguous run of entries; return the head hash, or raise naming the first bad one.

    ``start_prev_hash`` lets a site verify only the entries after a head it saw before.
    """
    prev = start_prev_hash
    expected_seq = None
    unsigned: list[int] = []
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            raise errors.FailedPrecondition(f"audit chain broken: entry {expected_seq} is missing or out of order")
        if entry.prev_hash != prev:
            raise errors.FailedPrecondition(
                f"audit chain broken at entry {entry.seq}: it does not follow its predecessor"
            )
        if hashlib.sha256(entry.content()).hexdigest() != entry.hash:
            raise errors.FailedPrecondition(f"audit chain broken at entry {entry.seq}: its content was altered")
        if entry.signature:
            try:
                public_key.verify(bytes.fromhex(entry.signature), bytes.fromhex(entry.hash))
            except (InvalidSignature, ValueError):
                raise errors.FailedPrecondition(
                    f"audit chain broken at entry {entry.seq}: not signed by this coordinator's audit key"
                ) from None
            unsigned.clear()
        else:
            unsigned.append(entry.seq)
        prev, expected_seq = entry.hash, entry.seq + 1
    if unsigned:
        raise errors.FailedPrecondition(
            f"audit chain broken at entry {unsigned[0]}: not signed by this coordinator's audit key"
        )
    return prev
