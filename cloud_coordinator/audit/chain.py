"""Hash chain and signatures for audit entries; no storage, no gRPC.

Each entry's hash covers its content and the previous entry's hash, so editing, deleting
or reordering any entry breaks every hash after it; each hash is signed with the
coordinator's Ed25519 audit key (kept apart from the CA key), so the chain cannot be
rewritten from scratch without that key. Anyone holding the public key can verify.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
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
        body = {k: v for k, v in asdict(self).items() if k not in ("hash", "signature")}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(entry: AuditEntry, key: Ed25519PrivateKey) -> AuditEntry:
    """``entry`` with its hash and signature filled in."""
    digest = hashlib.sha256(entry.content()).hexdigest()
    return AuditEntry(**{**asdict(entry), "hash": digest, "signature": key.sign(bytes.fromhex(digest)).hex()})


def verify(entries: Iterable[AuditEntry], public_key: Ed25519PublicKey, start_prev_hash: str = GENESIS) -> str:
    """Check a contiguous run of entries; return the head hash, or raise naming the first bad one.

    ``start_prev_hash`` lets a site verify only the entries after a head it saw before.
    """
    prev = start_prev_hash
    expected_seq = None
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            raise errors.FailedPrecondition(f"audit chain broken: entry {expected_seq} is missing or out of order")
        if entry.prev_hash != prev:
            raise errors.FailedPrecondition(
                f"audit chain broken at entry {entry.seq}: it does not follow its predecessor"
            )
        if hashlib.sha256(entry.content()).hexdigest() != entry.hash:
            raise errors.FailedPrecondition(f"audit chain broken at entry {entry.seq}: its content was altered")
        try:
            public_key.verify(bytes.fromhex(entry.signature), bytes.fromhex(entry.hash))
        except (InvalidSignature, ValueError):
            raise errors.FailedPrecondition(
                f"audit chain broken at entry {entry.seq}: not signed by this coordinator's audit key"
            ) from None
        prev, expected_seq = entry.hash, entry.seq + 1
    return prev
