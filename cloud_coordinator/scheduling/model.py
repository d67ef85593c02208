"""What the scheduler reasons about: what sites give each study, and what jobs need.

Plain values, no transport: the coordinator fills them from what sites declare and report,
the benchmark from a simulated fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from silolink import errors
from silolink.windows import TimeWindow

GIB = 1024**3


@dataclass(frozen=True)
class StudyShare:
    """What one site gives one study, at most, at any time.

    ``cpu`` and ``memory_bytes`` are caps on the study's reservations at the site, beside the
    site's own totals; ``windows`` (site local time) limit when the study's work may run;
    ``cpu_hours_per_day`` is a compute budget charged with each job's expected CPU time on
    the site's local day the job starts (0: no daily budget).
    """

    max_jobs: int = 1
    cpu: float = 1.0
    memory_bytes: int = 4 * GIB
    gpus: int = 0
    windows: tuple[TimeWindow, ...] = ()
    cpu_hours_per_day: float = 0.0

    def __post_init__(self) -> None:
        if self.max_jobs < 0 or self.cpu < 0 or self.memory_bytes < 0 or self.gpus < 0:
            raise errors.InvalidArgument("a study's share of a site cannot be negative")
        if self.cpu_hours_per_day < 0 or not math.isfinite(self.cpu_hours_per_day):
            raise errors.InvalidArgument("a study's compute budget must be 0 (none) or a positive number of CPU hours")


@dataclass(frozen=True)
class SiteCapacity:
    """A site's host, and its shares per study (a study absent from ``shares`` gets nothing)."""

    name: str
    cpus: float
    memory_bytes: int
    gpus: int = 0
    utc_offset_s: int = 0
    shares: dict[str, StudyShare] = field(default_factory=dict)


@dataclass(frozen=True)
class JobNeeds:
    """What a queued job asks for, at each site it runs on.

    ``sites`` are the candidate sites (None: every site); the job starts on at least
    ``min_sites`` of them and takes up to ``max_sites`` (0: every candidate with room).
    """

    id: str
    study: str
    cpu: float = 1.0
    memory_bytes: int = GIB
    gpus: int = 0
    duration_s: float = 3600.0
    min_sites: int = 1
    max_sites: int = 0
    priority: int = 0
    sites: tuple[str, ...] | None = None
    submitted_at: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.memory_bytes < 0 or self.gpus < 0:
            raise errors.InvalidArgument(f"job {self.id}: CPU, memory and GPUs cannot be negative")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise errors.InvalidArgument(f"job {self.id}: the expected duration must be a positive number of seconds")
        if self.min_sites < 1 or (self.max_sites and self.max_sites < self.min_sites):
            raise errors.InvalidArgument(f"job {self.id}: min sites must be at least 1 and at most max sites")


@dataclass(frozen=True)
class Placement:
    """A job started on ``sites`` at ``started_at``; its reservations end with it."""

    job_id: str
    study: str
    sites: tuple[str, ...]
    started_at: float
    expected_end: float


@dataclass(frozen=True)
class Waiting:
    """A queued job, its place in the queue and why it waits."""

    job_id: str
    study: str
    position: int
    reason: str
    next_change_at: float | None = None
