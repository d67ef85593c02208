"""The site's watch over the coordinator's audit chain.

The agent pins the coordinator's audit public key the first time it sees it and remembers
the head (sequence number and hash) of the chain it last verified. Each refresh verifies
only the new entries, continuing from that head; a full verification re-checks the whole
chain and that the remembered head is still in it, so a coordinator that edits, deletes
or reorders entries (even re-signing them with its own key) is caught by every site that
saw the old head.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from silolink import errors
from silolink.audit.pinned import AuditHead, HeadPin, verify_pinned
from silolink.audit.remote import check_continuation, fetch_all

from .remote import CoordinatorExchange

log = logging.getLogger(__name__)


class AuditWatcher:
    def __init__(self, path: Path, remote: CoordinatorExchange) -> None:
        self._pin = HeadPin(path)
        self._remote = remote
        self._lock = threading.Lock()

    def head(self) -> AuditHead | None:
        return self._pin.load()

    def refresh(self) -> AuditHead:
        """Verify the entries added since the remembered head; remember the new head."""
        with self._lock:
            head = self.head()
            if head is None:
                return self._verify_all()[0]
            # Fetch from the remembered entry itself: if it changed or vanished, say so now.
            entries, public_key = fetch_all(self._remote.audit_page, after_seq=max(0, head.seq - 1))
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
                self._pin.save(head)
            return head

    def verify(self) -> tuple[AuditHead, int, int]:
        """Verify the whole chain; return (new head, entries checked, remembered seq)."""
        with self._lock:
            head, before = self._verify_all()
            return head, head.seq, before.seq if before else 0

    def _verify_all(self) -> tuple[AuditHead, AuditHead | None]:
        chain, before = verify_pinned(self._remote.audit_page, self._pin, pinned_by="this site")
        if before is None:
            log.info("pinned the coordinator's audit key; chain verified up to entry %d", chain.head_seq)
        return AuditHead(chain.public_key, chain.head_seq, chain.head_hash), before
