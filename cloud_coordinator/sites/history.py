"""Each site's resource reports over time, in memory: one sample per interval, a bounded
ring per site.

Heartbeats arrive every few seconds and Presence keeps only the latest; the console's
site page and ``GetSite`` want hours of load and memory. Keeping every heartbeat would
cost ten thousand sites times thousands of reports, so this keeps the first report of
each ``interval_s`` (a minute by default) and the last ``capacity`` of those, as packed
20-byte rows (time as uint32 sixteenths of a second since the ring's first sample, values
as float32: about 7 significant digits, plenty for a chart). A ring starts small and
doubles until it holds ``capacity`` samples, so sites that reported only briefly cost
little (at the defaults, 10,000 sites hold about 72 MB: ``python -m bench.site_history``).
``add`` runs on the event loop for every heartbeat: most calls are one dictionary lookup
and one comparison.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from silolink.gen.common.v1 import site_pb2

SAMPLE = np.dtype(
    [
        ("at", "<u4"),  # sixteenths of a second since the ring's base time
        ("load", "<f4"),
        ("memory_total", "<f4"),
        ("memory_available", "<f4"),
        ("disk_free", "<f4"),
    ]
)
FIRST_CAPACITY = 16
TICKS_PER_S = 16
MAX_TICKS = 2**32 - 1  # 8.5 years after a ring's first sample, it starts again
# Loads above this are kept as this (float32 would hold larger ones as infinity).
MAX_LOAD = 1e30
# float32 rounds 2^63 - 1 up to 2^63: read back no more than what a request may carry.
MAX_BYTES = 2**63 - 1


@dataclass(frozen=True)
class ResourceSample:
    """One kept report, as read back."""

    at: float
    load_average_1m: float
    memory_total_bytes: int
    memory_available_bytes: int
    disk_free_bytes: int


class _Ring:
    __slots__ = ("base", "rows", "start", "size", "next_at")

    def __init__(self, capacity: int, base: float) -> None:
        self.base = base  # times are kept as ticks after this
        self.rows = np.zeros(capacity, SAMPLE)
        self.start = 0  # index of the oldest sample
        self.size = 0
        self.next_at = 0.0  # the next report at or after this time is kept

    def append(self, row: tuple, capacity: int) -> None:
        if self.size < len(self.rows):
            self.rows[self.size] = row
            self.size += 1
        elif len(self.rows) < capacity:  # not wrapped yet (start == 0): grow
            # A fresh array of exactly the new size (np.resize would keep a view of a larger one).
            grown = np.zeros(min(capacity, 2 * len(self.rows)), SAMPLE)
            grown[: self.size] = self.rows
            self.rows = grown
            self.rows[self.size] = row
            self.size += 1
        else:
            self.rows[self.start] = row
            self.start = (self.start + 1) % len(self.rows)

    def ordered(self) -> np.ndarray:
        if self.size < len(self.rows):
            return self.rows[: self.size].copy()
        return np.concatenate((self.rows[self.start :], self.rows[: self.start]))


class ResourceHistory:
    """Bounded resource history of every site (thread-safe; ``add`` is cheap)."""

    def __init__(self, capacity: int, interval_s: float) -> None:
        self.capacity = capacity
        self.interval_s = interval_s
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()

    def add(self, site: str, at: float, report: site_pb2.ResourceReport) -> None:
        """Keep ``report`` (received at ``at``) if it is the first of its interval."""
        if self.capacity == 0:
            return
        with self._lock:
            ring = self._rings.get(site)
            if ring is not None and at < ring.next_at:
                return
            ticks = round((at - ring.base) * TICKS_PER_S) if ring is not None else 0
            if ring is None or not 0 <= ticks <= MAX_TICKS:
                ring = self._rings[site] = _Ring(min(FIRST_CAPACITY, self.capacity), at)
                ticks = 0
            ring.next_at = at + self.interval_s
            ring.append(
                (
                    ticks,
                    min(max(report.load_average_1m, 0.0), MAX_LOAD),
                    report.memory_total_bytes,
                    report.memory_available_bytes,
                    report.disk_free_bytes,
                ),
                self.capacity,
            )

    def samples(self, site: str, after: float | None = None) -> list[ResourceSample]:
        """The site's kept samples, oldest first (only those taken after ``after``)."""
        with self._lock:
            ring = self._rings.get(site)
            rows = ring.ordered() if ring is not None else np.zeros(0, SAMPLE)
            base = ring.base if ring is not None else 0.0
        times = base + rows["at"] / TICKS_PER_S
        if after is not None:  # within half a tick of ``after`` is the sample ``after`` came from
            keep = times > after + 0.5 / TICKS_PER_S
            rows, times = rows[keep], times[keep]
        return [
            ResourceSample(
                at=t,
                load_average_1m=round(float(load), 2),
                memory_total_bytes=min(int(total), MAX_BYTES),
                memory_available_bytes=min(int(available), MAX_BYTES),
                disk_free_bytes=min(int(disk), MAX_BYTES),
            )
            for t, (_, load, total, available, disk) in zip(times.tolist(), rows.tolist(), strict=True)
        ]

    def forget(self, site: str) -> None:
        with self._lock:
            self._rings.pop(site, None)

    def sites(self) -> int:
        with self._lock:
            return len(self._rings)

    def bytes_held(self) -> int:
        """The samples' own bytes (the arrays' buffers), over every site."""
        with self._lock:
            return sum(ring.rows.nbytes for ring in self._rings.values())
