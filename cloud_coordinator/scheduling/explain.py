"""Why a job waits, when it could start, and why it never could: the scheduler's words.

Each candidate site is put under the first thing that keeps the job off it (offline, the
site declined, outside the study's time window, the study's limit of jobs, GPUs, CPU,
memory, today's compute budget), and each group is reported with the earliest time that
changes, as in "2 of 3 sites have no free GPU until 22:00 UTC".
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from silolink import windows as win

from .model import GIB, JobNeeds, Waiting

if TYPE_CHECKING:
    from .scheduler import Scheduler, _Queued


def clock(t: float, now: float) -> str:
    """A moment as an operator reads it: "22:00 UTC", with the date when it is a day or more away."""
    if t - now >= 86400:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
    return time.strftime("%H:%M UTC", time.gmtime(t))


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _gpus(count: int) -> str:
    return "a GPU" if count == 1 else f"{count} GPUs"


def describe_needs(needs: JobNeeds) -> str:
    parts = [f"{needs.cpu:g} CPU", f"{needs.memory_bytes / GIB:g} GiB"]
    if needs.gpus:
        parts.append(f"{needs.gpus} GPU")
    return f"{', '.join(parts)} for {duration(needs.duration_s)} at {needs.min_sites} site(s)"


def _static(s: Scheduler, queued: _Queued) -> list[tuple[str, np.ndarray]]:
    """(reason, failing mask) pairs that no waiting can cure, in order."""
    f, needs = s.fleet, queued.needs
    n, row = f.n, f.study(needs.study)
    study = needs.study
    longest = f.longest_window_table()[f.win_id[row, :n]]
    return [
        ("have been removed", ~f.active[:n]),
        (f"give study {study!r} nothing (not accepted there)", f.sh_jobs[row, :n] < 1),
        (
            f"give study {study!r} less than {needs.cpu:g} CPU",
            np.minimum(f.sh_cpu[row, :n], f.total_cpu[:n]) < needs.cpu - 1e-9,
        ),
        (
            f"give study {study!r} less than {needs.memory_bytes / GIB:g} GiB of memory",
            np.minimum(f.sh_mem[row, :n], f.total_mem[:n]) < needs.memory_bytes,
        ),
        (
            f"cannot give study {study!r} {_gpus(needs.gpus)}",
            np.minimum(f.sh_gpu[row, :n], f.total_gpu[:n]) < needs.gpus,
        ),
        (f"have no time window as long as {duration(needs.duration_s)}", longest < needs.duration_s),
        (
            f"give study {study!r} a daily compute budget under the job's "
            f"{needs.cpu * needs.duration_s / 3600:g} CPU-hours",
            f.sh_budget_s[row, :n] + 1e-6 < needs.cpu * needs.duration_s,
        ),
    ]


def _group(candidates: np.ndarray, checks: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """Each candidate site under its first failing check: (reason, columns) for non-empty groups."""
    left = candidates.copy()
    groups = []
    for reason, failing in checks:
        hit = left & failing
        if hit.any():
            groups.append((reason, np.flatnonzero(hit)))
            left &= ~hit
    return groups


def impossible(s: Scheduler, queued: _Queued) -> str:
    """Why no ``min_sites`` candidate sites could ever hold the job, even empty; "" if some could."""
    needs = queued.needs
    candidates = s._candidates(queued)
    total = int(candidates.sum())
    unknown = 0 if needs.sites is None else len(set(needs.sites) - set(s.fleet.index))
    checks = _static(s, queued)
    possible = candidates.copy()
    for _, failing in checks:
        possible &= ~failing
    if int(possible.sum()) >= needs.min_sites:
        return ""
    head = f"no {needs.min_sites} site(s) can ever run this job of study {needs.study!r} ({describe_needs(needs)})"
    if total == 0 and not unknown:
        return f"{head}: no site matches its selection"
    parts = [f"{len(cols)} of {total} {reason}" for reason, cols in _group(candidates, checks)]
    if unknown:
        parts.append(f"{unknown} named site(s) are not known to the scheduler")
    possible_count = int(possible.sum())
    return f"{head}: {'; '.join(parts)}; {possible_count} could"


def refused(s: Scheduler, queued: _Queued) -> str:
    """Why the job can never start because sites refused it: the candidate sites that could
    hold it and have not refused are fewer than ``min_sites``. Each refusal is named with its
    reason, for the operator to take to the site or to change the job; "" if enough remain."""
    needs = queued.needs
    left = s._candidates(queued) & ~_refusing(s, queued)
    for _, failing in _static(s, queued):
        left &= ~failing
    count = int(left.sum())
    if count >= needs.min_sites:
        return ""
    said = "; ".join(f"{site}: {reason}" for site, reason in sorted(queued.refused.items()))
    if count == 0:
        return f"every eligible site refused this job: {said}"
    return f"the job needs {needs.min_sites} site(s) and only {count} other eligible site(s) remain; refused: {said}"


def _refusing(s: Scheduler, queued: _Queued) -> np.ndarray:
    """The sites whose policy refused the job, as a mask over the fleet's columns."""
    mask = np.zeros(s.fleet.n, dtype=bool)
    mask[[s.fleet.index[site] for site in queued.refused if site in s.fleet.index]] = True
    return mask


def _earliest_end(s: Scheduler, columns: np.ndarray, study: str | None = None, gpu: bool = False) -> float:
    """The soonest expected end of a job running at any of ``columns`` (of ``study``, holding GPUs)."""
    ends = s.earliest_ends()
    key = "gpu" if gpu else (f"study:{study}" if study else "any")
    per_site = ends.get(key)
    return float(per_site[columns].min()) if per_site is not None and len(columns) else math.inf


def why_waiting(s: Scheduler, queued: _Queued, position: int, now: float) -> Waiting:
    f, needs = s.fleet, queued.needs
    n, row = f.n, f.study(needs.study)
    candidates = s._candidates(queued)
    total = int(candidates.sum())
    room = s.eligible(queued, now, holds=False)
    ready = int(room.sum())
    head = f"needs {needs.min_sites} of {total} site(s), {ready} {'has' if ready == 1 else 'have'} room now"
    excluded = np.zeros(n, dtype=bool)
    for column, until in queued.excluded.items():
        excluded[column] = until > now
    free = f.free(row, now)
    checks = [
        *_static(s, queued),
        ("refused this job (their policy for the study does not cover it)", _refusing(s, queued)),
        ("are offline", ~f.online[:n]),
        ("declined this job a moment ago", excluded),
        (f"have no time window open for the study's {duration(needs.duration_s)} job", free.open_s < needs.duration_s),
        (
            f"already run as many jobs of study {needs.study!r} as they allow",
            f.st_jobs[row, :n] + 1 > f.sh_jobs[row, :n],
        ),
        ("have no free GPU", free.gpus < needs.gpus),
        (f"have less than {needs.cpu:g} CPU free", free.cpu < needs.cpu - 1e-9),
        (f"have less than {needs.memory_bytes / GIB:g} GiB free", free.memory < needs.memory_bytes),
        (
            f"have used study {needs.study!r}'s compute budget for today",
            free.budget_s + 1e-6 < needs.cpu * needs.duration_s,
        ),
    ]
    parts, changes = [], []
    for reason, columns in _group(candidates & ~room, checks):
        until = _until(s, queued, reason, columns, now)
        if until is not None and math.isfinite(until):
            changes.append(until)
            parts.append(f"{len(columns)} of {total} sites {reason} until {clock(until, now)}")
        else:
            parts.append(f"{len(columns)} of {total} sites {reason}")
    if ready >= needs.min_sites:
        if s.held_for and s.held_for != needs.id:
            parts.append(f"the sites with room are held for job {s.held_for}, which has waited longer")
        elif s.policy == "fifo" and position > 1:
            parts.append("waits behind the job first in line")
        else:
            parts.append("starts at the next scheduling pass")
    elif s.held_for == needs.id:
        parts.append("its sites are held for it as they free up")
    return Waiting(needs.id, needs.study, position, f"{head}: {'; '.join(parts)}", min(changes, default=None))


def _until(s: Scheduler, queued: _Queued, reason: str, columns: np.ndarray, now: float) -> float | None:
    f, needs = s.fleet, queued.needs
    row = f.study(needs.study)
    if reason.startswith("declined"):
        return min(queued.excluded.get(c, math.inf) for c in columns.tolist())
    if reason.startswith("have no time window open"):
        times = [
            win.next_fit(*f.window_sigs[wid], now, needs.duration_s)
            for wid in np.unique(f.win_id[row, columns]).tolist()
        ]
        return min((t for t in times if t is not None), default=None)
    if reason.startswith("already run"):
        return _earliest_end(s, columns, study=needs.study)
    if reason == "have no free GPU":
        return _earliest_end(s, columns, gpu=True)
    if reason.startswith("have less than"):
        return _earliest_end(s, columns)
    if reason.startswith("have used"):
        return float(((f.local_day(now)[columns] + 1) * win.DAY_S - f.offset_s[columns]).min())
    return None


def ready_times(s: Scheduler, queued: _Queued, now: float) -> np.ndarray:
    """For each site, the earliest time it could take the job if running jobs end as expected.

    Infinite where it never could (not a candidate, offline, too small) or where only a
    daily budget reset would help. Used to hold sites for a blocked job.
    """
    f, needs = s.fleet, queued.needs
    n, row = f.n, f.study(needs.study)
    ready = np.full(n, math.inf)
    possible = s._candidates(queued) & f.online[:n] & f.active[:n]
    for _, failing in _static(s, queued):
        possible &= ~failing
    possible &= f.free(row, now).budget_s + 1e-6 >= needs.cpu * needs.duration_s
    for column, until in queued.excluded.items():
        if until > now:
            possible[column] = False
    now_ok = s.eligible(queued, now, holds=False)
    ready[now_ok] = now
    for c in np.flatnonzero(possible & ~now_ok).tolist():
        ready[c] = _site_ready(s, c, row, needs, now)
    return ready


def _site_ready(s: Scheduler, c: int, row: int, needs: JobNeeds, now: float) -> float:
    """When site column ``c`` frees enough for the job, as running jobs end (plain floats: one site)."""
    f = s.fleet
    # The site's own room and the study's room free up differently: track both.
    site_cpu = float(f.total_cpu[c] - f.used_cpu[c] - f.ext_cpu[c])
    site_mem = float(f.total_mem[c] - f.used_mem[c] - f.ext_mem[c])
    site_gpu = float(f.total_gpu[c] - f.used_gpu[c])
    jobs = float(f.sh_jobs[row, c] - f.st_jobs[row, c])
    study_cpu = float(f.sh_cpu[row, c] - f.st_cpu[row, c])
    study_mem = float(f.sh_mem[row, c] - f.st_mem[row, c])
    study_gpu = float(f.sh_gpu[row, c] - f.st_gpu[row, c])
    t = now
    runs = sorted((s._running[j] for j in s._by_site.get(c, ())), key=lambda r: r.expected_end)
    for run in [None, *runs]:
        if run is not None:
            t = max(t, run.expected_end)
            got = run.needs
            site_cpu += got.cpu
            site_mem += got.memory_bytes
            site_gpu += got.gpus
            if got.study == needs.study:
                jobs += 1
                study_cpu += got.cpu
                study_mem += got.memory_bytes
                study_gpu += got.gpus
        if (
            jobs >= 1
            and min(site_cpu, study_cpu) >= needs.cpu - 1e-9
            and min(site_mem, study_mem) >= needs.memory_bytes
            and min(site_gpu, study_gpu) >= needs.gpus
        ):
            fit = win.next_fit(*f.window_sigs[f.win_id[row, c]], t, needs.duration_s)
            return math.inf if fit is None else fit
    return math.inf
