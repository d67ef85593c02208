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

    def content(self, details_json: str | None = None) -> bytes:
        """The bytes the hash covers: every field but hash and signature, as compact JSON
        with sorted keys. ``details_json`` is ``details`` already encoded that way (see
        ``encode_details``), for a caller that stores that text too and need not encode
        a batch's long details twice."""
        if details_json is None:
            details_json = encode_details(self.details)
        # Assembled in sorted key order; the same bytes as json.dumps of the whole body with
        # sort_keys and compact separators (tests hold the two equal).
        dumps = json.dumps
        return (
            f'{{"action":{dumps(self.action)},"actor":{dumps(self.actor)},"at":{dumps(self.at)},'
            f'"details":{details_json},"prev_hash":{dumps(self.prev_hash)},"seq":{dumps(self.seq)},'
            f'"subject":{dumps(self.subject)}}}'
        ).encode()


def encode_details(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"))


def seal(entry: AuditEntry, key: Ed25519PrivateKey | None, details_json: str | None = None) -> AuditEntry:
    """``entry`` with its hash filled in, and its signature unless ``key`` is None (an
    entry inside a batch, covered by the batch's last signature)."""
    digest = hashlib.sha256(entry.content(details_json)).hexdigest()
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
