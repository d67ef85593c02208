"""Presence: each site's last contact, agent version and resource report, kept in memory
and written to the database in one batched transaction per interval.

A heartbeat costs a dictionary update on the event loop, never a disk write: ten thousand
sites at one heartbeat a second are ten thousand dictionary updates and one transaction.
Staleness and ``sites list`` read the live values, so a slow disk delays only how fresh
the stored copy is (what a restarted coordinator starts from), never whether a healthy
site looks alive. The flush is the exchange's group commit idea: many updates, one fsync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from silolink.gen.common.v1 import site_pb2
from silolink.protos import resources_to_dict

from .history import ResourceHistory
from .store import SiteStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contact:
    """A site's latest heartbeat as received (the report is converted when read)."""

    at: float
    report: site_pb2.ResourceReport

    @property
    def version(self) -> str:
        return self.report.agent_version

    def resources(self) -> dict[str, Any]:
        return resources_to_dict(self.report)


class Presence:
    def __init__(
        self,
        store: SiteStore,
        flush_interval_s: float,
        clock: Callable[[], float] = time.time,
        history: ResourceHistory | None = None,
    ) -> None:
        self._store = store
        self.history = history  # reports over time, sampled (history.py)
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._live: dict[str, Contact] = {}
        self._dirty: dict[str, Contact] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0
        self.flushed_rows = 0

    def record(self, site: str, report: site_pb2.ResourceReport) -> Contact:
        """Note a heartbeat (memory only; any thread)."""
        contact = Contact(self._clock(), report)
        with self._lock:
            self._live[site] = contact
            self._dirty[site] = contact
        if self.history is not None:
            self.history.add(site, contact.at, report)
        return contact

    def get(self, site: str) -> Contact | None:
        with self._lock:
            return self._live.get(site)

    def snapshot(self) -> dict[str, Contact]:
        with self._lock:
            return dict(self._live)

    def forget(self, site: str) -> None:
        with self._lock:
            self._live.pop(site, None)
            self._dirty.pop(site, None)

    # -- writing behind ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="presence-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer and write what is left (before the database closes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - retried at the next interval; memory stays right
                log.exception("writing site presence to the database failed; retrying")

    def flush(self) -> int:
        """Write every contact that changed since the last flush, in one transaction."""
        with self._lock:
            batch, self._dirty = self._dirty, {}
        if not batch:
            return 0
        rows = [(c.at, c.version, c.resources(), site) for site, c in batch.items()]
        try:
            self._store.update_contacts(rows)
        except BaseException:
            with self._lock:  # put back what is not newer, for the next try
                for site, contact in batch.items():
                    self._dirty.setdefault(site, contact)
            raise
        self.flushes += 1
        self.flushed_rows += len(rows)
        return len(rows)
