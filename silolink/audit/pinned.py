"""The head of the audit chain and the audit key, pinned by whoever verifies from outside.

A site's agent and an operator's CLI each keep, in a small JSON file of their own, the
coordinator's audit public key (pinned the first time) and the head (sequence number and
hash) of the chain they last verified. A later verification must find that head still in
the chain, under the same key: so deleting the newest entries, emptying the table, or
rewriting the chain and re-signing it (with the old key or a new one) is caught, even
though each of those chains is consistent on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.files import write_atomic

from .remote import PageFetcher, VerifiedChain, check_chain, fetch_all


@dataclass(frozen=True)
class AuditHead:
    """The audit key and the newest entry a verifier has seen."""

    public_key: bytes
    seq: int
    hash: str


class HeadPin:
    """An ``AuditHead`` kept in a JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> AuditHead | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            return AuditHead(bytes.fromhex(data["public_key"]), int(data["seq"]), str(data["hash"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise errors.FailedPrecondition(
                f"{self.path} does not hold a pinned audit head ({e}); it may have been tampered with"
            ) from None

    def save(self, head: AuditHead) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"public_key": head.public_key.hex(), "seq": head.seq, "hash": head.hash}
        write_atomic(self.path, json.dumps(body).encode(), mode=0o644)


def verify_pinned(fetch_page: PageFetcher, pin: HeadPin, pinned_by: str) -> tuple[VerifiedChain, AuditHead | None]:
    """Verify the whole chain against ``pin`` (pinning on first use) and move the pin to its head.

    Returns the verified chain and the head pinned before (None at first use). Raises
    FailedPrecondition, leaving the pin as it was, when the chain is broken, shorter than
    the pinned head, rewritten, or under another key.
    """
    before = pin.load()
    entries, public_key = fetch_all(fetch_page)
    chain = check_chain(
        entries,
        public_key,
        pinned_key=before.public_key if before else None,
        remembered=(before.seq, before.hash) if before else None,
        pinned_by=pinned_by,
    )
    pin.save(AuditHead(chain.public_key, chain.head_seq, chain.head_hash))
    return chain, before
