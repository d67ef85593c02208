"""The site's watch over the coordinator's audit chain.

The agent pins the coordinator's audit public key the first time it sees it and remembers
the head (sequence number and hash) of the chain it last verified. Each refresh verifies
only the new entries, continuing from that head; a full verification re-checks the whole
chain and that the remembered head is still in it, so a coordinator that edits, deletes
or reorders entries (even re-signing them with its own key) is caught by every site that
saw the old head.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.audit.remote import check_chain, check_continuation, fetch_all
from silolink.files import write_atomic

from .remote import CoordinatorExchange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditHead:
    public_key: bytes
    seq: int
    hash: str


class AuditWatcher:
    def __init__(self, path: Path, remote: CoordinatorExchange) -> None:
        self._path = path
        self._remote = remote
        self._lock = threading.Lock()

    def head(self) -> AuditHead | None:
        if not self._path.exists():
            return None
        data = json.loads(self._path.read_text())
        return AuditHead(bytes.fromhex(data["public_key"]), data["seq"], data["hash"])

    def _remember(self, head: AuditHead) -> None:
        write_atomic(
            self._path,
            json.dumps({"public_key": head.public_key.hex(), "seq": head.seq, "hash": head.hash}).encode(),
            mode=0o644,
        )

    def refresh(self) -> AuditHead:
        """Verify the entries added since the remembered head; remember the new head."""
        with self._lock:
            head = self.head()
            if head is None:
                return self._verify_all(None)
            # Fetch from the remembered entry itself: if it changed or vanished, say so now.
            entries, public_key = fetch_all(self._remote.audit_page, after_seq=head.seq - 1)
            if head.seq > 0:
                if not entries or entries[0].seq != head.seq:
                    raise errors.FailedPrecondition(
                        f"audit chain broken: entry {head.seq}, which this site saw before, has been deleted"
                    )
                if entries[0].hash != head.hash:
                    raise errors.FailedPrecondition(
                        f"audit chain broken: entry {head.seq} no longer has the hash this site saw"
                    )
                entries = entries[1:]
            seq, digest = check_continuation(entries, public_key, head.public_key, (head.seq, head.hash))
            if seq != head.seq:
                head = AuditHead(head.public_key, seq, digest)
                self._remember(head)
            return head

    def verify(self) -> tuple[AuditHead, int, int]:
        """Verify the whole chain; return (new head, entries checked, remembered seq)."""
        with self._lock:
            before = self.head()
            head = self._verify_all(before)
            return head, head.seq, before.seq if before else 0

    def _verify_all(self, before: AuditHead | None) -> AuditHead:
        entries, public_key = fetch_all(self._remote.audit_page)
        chain = check_chain(
            entries,
            public_key,
            pinned_key=before.public_key if before else None,
            remembered=(before.seq, before.hash) if before else None,
        )
        head = AuditHead(chain.public_key, chain.head_seq, chain.head_hash)
        self._remember(head)
        if before is None:
            log.info("pinned the coordinator's audit key; chain verified up to entry %d", head.seq)
        return head
