"""The job queue and its placement decisions, as plain logic over a model of the fleet.

A job waits in the queue until enough of its candidate sites have room for it at once:
room in the site's own totals (less what heartbeats say others use), room in what the site
gives the job's study (concurrent jobs, CPU, memory, GPUs), an open time window long enough
for the job's expected duration, and compute budget left for the site's day. Then it is
placed: its resources are reserved at every site it runs on until it finishes, so two jobs
never hold one GPU.

Which job goes first (``policy="fair"``):
- Between studies, weighted dominant-resource fairness (DRF, Ghodsi et al. 2011): the
  study whose largest share of any fleet resource (CPU, memory, GPUs), divided by its
  weight, is smallest is served next. A study that holds half the fleet's GPUs waits while
  one that holds little gets its turn.
- Within a study, higher priority first, then the order of submission.
- Backfilling: a job that cannot start does not block the ones behind it, with one
  guard against starving large jobs (EASY backfilling, Lifka 1995): the first job in the
  fair order that cannot start holds the sites it will get soonest, from the time they
  free up by the expected ends of what runs there; other jobs may use those sites only if
  they end before then.

``policy="fifo"`` is the baseline: strict submission order with the same checks, the first
job that cannot start blocks the queue.

Refusals are immediate: a job no set of ``min_sites`` candidate sites could ever hold (even
empty) raises FailedPrecondition saying what is missing. Sites stay in charge: a site that
declines a placement is released and skipped for that job for a while (``decline``), and
the job runs on the rest or waits. A site whose own policy refuses the job (not a passing
"busy") is remembered until it answers otherwise or re-declares what it gives; once the
sites that have not refused are too few for the job, ``hopeless`` says why, and the job
should fail rather than wait for answers that will not change.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from silolink import errors
from silolink import windows as win

from . import explain
from .fleet import Fleet
from .model import JobNeeds, Placement, SiteCapacity, Waiting

POLICIES = ("fair", "fifo")
# GPUs weigh on placement: a job without GPUs goes to sites without free GPUs when it can.
_GPU_SITE_PENALTY = 4.0


@dataclass
class _Queued:
    needs: JobNeeds
    seq: int
    # Sites that declined this job, by column, until when.
    excluded: dict[int, float] = field(default_factory=dict)
    # Sites whose policy refused this job (not a passing "busy"), by name, with their reason.
    refused: dict[str, str] = field(default_factory=dict)
    mask: np.ndarray | None = None
    mask_version: int = -1


@dataclass
class _Running:
    needs: JobNeeds
    columns: np.ndarray
    started_at: float
    expected_end: float
    day: np.ndarray  # the local day each site's budget was charged on
    charged_s: float  # CPU-seconds charged at each site
    seq: int  # its place in the queue, kept if it goes back there
    queued: _Queued | None = None  # as it was queued (its candidate sites)


class _Failures:
    """Jobs that could not start in this pass. Nothing is released during a pass, so a job of
    the same study needing at least as much of everything, for at least as long, on no more
    sites, cannot start either: it is skipped without a look at the fleet."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, list[tuple[float, float, float, float, int]]] = {}

    @staticmethod
    def _key(queued: _Queued) -> tuple:
        return (queued.needs.study, queued.needs.sites)

    def add(self, queued: _Queued) -> None:
        if not queued.excluded:
            n = queued.needs
            self._by_key.setdefault(self._key(queued), []).append(
                (n.cpu, n.memory_bytes, n.gpus, n.duration_s, n.min_sites)
            )

    def covers(self, queued: _Queued) -> bool:
        n = queued.needs
        keys = [self._key(queued)]
        if n.sites is not None:
            keys.append((n.study, None))  # failed on every site, so on any subset too
        for key in keys:
            for cpu, mem, gpus, duration, sites in self._by_key.get(key, ()):
                if (
                    n.cpu >= cpu
                    and n.memory_bytes >= mem
                    and n.gpus >= gpus
                    and n.duration_s >= duration
                    and n.min_sites >= sites
                ):
                    return True
        return False


class Scheduler:
    """Queue, placement and release of jobs over a ``Fleet``. Not thread-safe: callers lock."""

    def __init__(self, policy: str = "fair", weights: dict[str, float] | None = None, decline_cooldown_s: float = 600):
        if policy not in POLICIES:
            raise errors.InvalidArgument(f"scheduling policy {policy!r}: use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.fleet = Fleet()
        self.weights = dict(weights or {})
        self.decline_cooldown_s = decline_cooldown_s
        self._queued: dict[str, _Queued] = {}
        self._running: dict[str, _Running] = {}
        self._by_site: dict[int, set[str]] = {}
        self._seq = 0
        # Per study: reserved CPU, memory and GPUs across the fleet (for DRF).
        self._usage: dict[str, np.ndarray] = {}
        self._holds = np.full(0, math.inf)  # per site: from when it is held for a blocked job
        self.held_for: str | None = None
        self._queue_version = 0
        self._ends: tuple[int, dict[str, np.ndarray]] = (-1, {})
        self._quiet: tuple[int, int] = (-1, -1)
        self._quiet_until = -math.inf

    # --- fleet -------------------------------------------------------------------------

    def put_site(self, site: SiteCapacity) -> None:
        self.fleet.put_site(site)

    def remove_site(self, name: str) -> None:
        self.fleet.remove_site(name)

    def report(self, site: str, cpu_load: float, memory_available: float, online: bool = True) -> None:
        self.fleet.report(site, cpu_load, memory_available, online)

    # --- queue -------------------------------------------------------------------------

    def submit(self, needs: JobNeeds) -> int:
        """Queue ``needs``; its position (1 = next). Refuses at once a job no sites could ever hold."""
        if needs.id in self._queued or needs.id in self._running:
            raise errors.AlreadyExists(f"job {needs.id} is already queued or running")
        queued = _Queued(needs, self._seq)
        self._check_possible(queued)
        self._seq += 1
        self._queued[needs.id] = queued
        self._queue_version += 1
        return self.position(needs.id)

    def restore_running(self, needs: JobNeeds, sites: list[str], started_at: float) -> None:
        """Re-reserve a job that was running before a restart, on the sites it holds."""
        columns = np.array([self.fleet.index[s] for s in sites if s in self.fleet.index], dtype=np.int64)
        self._reserve(_Queued(needs, self._seq), columns, started_at)
        self._seq += 1

    def cancel(self, job_id: str) -> bool:
        """Drop a queued job, or release a running one; False if the scheduler does not know it."""
        if self._queued.pop(job_id, None) is not None:
            self._queue_version += 1
            return True
        return self.finish(job_id, None)

    def finish(self, job_id: str, now: float | None) -> bool:
        """Release a job's reservations; its budget charge becomes the CPU time it really ran."""
        run = self._running.pop(job_id, None)
        if run is None:
            return False
        actual_s = run.charged_s if now is None else run.needs.cpu * max(0.0, now - run.started_at)
        self._release(run, np.ones(len(run.columns), dtype=bool), refund_s=max(0.0, run.charged_s - actual_s))
        return True

    def decline(self, job_id: str, site: str, now: float, refusal: str | None = None) -> Placement | None:
        """``site`` will not run ``job_id`` now: busy, not connected, or, with ``refusal`` (its
        reason), its own policy says no.

        The site's reservation is released and the site is skipped for the job for
        ``decline_cooldown_s``. If the job still has ``min_sites`` sites it goes on with them
        (the new placement is returned); otherwise every reservation is released, the job goes
        back to the queue in its old place, and None is returned. A job already back in the
        queue (another site of the same offer declined first) just skips the site: every
        decline of an offer is recorded. A refusal is remembered (``hopeless``) until the site
        answers otherwise or re-declares what it gives (``forget``).
        """
        column = self.fleet.index.get(site)
        run = self._running.get(job_id)
        queued = self._queued.get(job_id) or (run.queued or _Queued(run.needs, run.seq) if run else None)
        if column is None or queued is None or (run is not None and column not in run.columns):
            raise errors.NotFound(f"job {job_id} is not placed on site {site}")
        if run is not None:
            gone = run.columns == column
            self._release(run, gone, refund_s=run.charged_s)
            run.columns, run.day = run.columns[~gone], run.day[~gone]
            run.queued = queued  # the next decline of the same offer adds to the same record
        queued.excluded[column] = now + self.decline_cooldown_s
        if refusal is None:
            queued.refused.pop(site, None)  # its latest answer was a passing one
        else:
            queued.refused[site] = refusal
        if run is None:
            return None
        if len(run.columns) >= run.needs.min_sites:
            return self._placement(job_id, run)
        del self._running[job_id]
        self._release(run, np.ones(len(run.columns), dtype=bool), refund_s=run.charged_s)
        self._queued[job_id] = queued
        self._queue_version += 1
        return None

    def hopeless(self, job_id: str) -> str:
        """Why a queued job can never start: the candidate sites that have not refused it are
        fewer than its ``min_sites`` (naming each refusing site and its reason); "" otherwise."""
        queued = self._queued.get(job_id)
        if queued is None or not queued.refused:
            return ""
        return explain.refused(self, queued)

    def forget(self, site: str) -> None:
        """``site`` changed what it gives (accepted, re-declared or left a study): its refusals
        and declines no longer hold, so it is asked again at the next pass."""
        column = self.fleet.index.get(site)
        records = [*self._queued.values(), *(run.queued for run in self._running.values() if run.queued)]
        for queued in records:
            queued.refused.pop(site, None)
            if column is not None and queued.excluded.pop(column, None) is not None:
                self._queue_version += 1

    def requeue(self, job_id: str) -> bool:
        """Put a placed job back in the queue, in its old place (its launcher is not there yet)."""
        run = self._running.pop(job_id, None)
        if run is None:
            return False
        self._release(run, np.ones(len(run.columns), dtype=bool), refund_s=run.charged_s)
        self._queued[job_id] = run.queued or _Queued(run.needs, run.seq)
        self._queue_version += 1
        return True

    def shrink(self, job_id: str, site: str) -> int:
        """A running job loses ``site`` (it left the study mid-job): release it there; the job
        goes on with the rest (or fails, the caller's call). The sites it still holds."""
        run = self._running.get(job_id)
        column = self.fleet.index.get(site)
        if run is None or column is None or column not in run.columns:
            return len(run.columns) if run is not None else 0
        gone = run.columns == column
        self._release(run, gone, refund_s=0.0)
        run.columns, run.day = run.columns[~gone], run.day[~gone]
        return len(run.columns)

    # --- decisions ---------------------------------------------------------------------

    def schedule(self, now: float) -> list[Placement]:
        """Start every queued job that can start now, in the policy's order.

        Each job starts on ``min_sites`` sites first; once no queued job can start, the jobs
        started in this pass take more of the sites still free, up to their ``max_sites``, so
        extra sites for one job never keep another job waiting.
        """
        if not self._queued:
            return []
        # A pass that found nothing to start finds nothing again until something changes:
        # a reservation or report, the queue, a window opening, a local midnight, a decline expiring.
        if self._quiet == (self.fleet.state, self._queue_version) and now < self._quiet_until:
            return []
        started = self._schedule_fifo(now) if self.policy == "fifo" else self._schedule_fair(now)
        placed = [self._extend(job_id, now) for job_id in started]
        self._quiet = (self.fleet.state, self._queue_version)
        self._quiet_until = self._next_change(now)
        return placed

    def _next_change(self, now: float) -> float:
        """The next moment a job that cannot start now might: a window opens, a day turns, a decline ends."""
        f = self.fleet
        moments = [now + win.DAY_S]
        for windows, offset in f.window_sigs:
            for window in windows:
                opens, _ = window.occurrence(now, offset)
                moments.append(opens if opens > now else opens + win.DAY_S)
        for offset in set(f.offset_s[: f.n].tolist()):
            moments.append(((now + offset) // win.DAY_S + 1) * win.DAY_S - offset)
        for queued in self._queued.values():
            moments.extend(queued.excluded.values())
        return min(m for m in moments if m > now)

    def _schedule_fifo(self, now: float) -> list[str]:
        placed = []
        for queued in sorted(self._queued.values(), key=lambda q: q.seq):
            if not self._try_place(queued, now):
                break
            placed.append(queued.needs.id)
        return placed

    def _schedule_fair(self, now: float) -> list[str]:
        self._holds = np.full(self.fleet.n, math.inf)
        self.held_for = None
        per_study: dict[str, list[_Queued]] = {}
        for queued in self._queued.values():
            per_study.setdefault(queued.needs.study, []).append(queued)
        for jobs in per_study.values():
            jobs.sort(key=lambda q: (-q.needs.priority, q.seq))
        # Nothing is released during a pass, so a job that cannot start now will not start
        # later in the same pass: each study's list is walked once, from where it stopped.
        cursor = dict.fromkeys(per_study, 0)
        heap = [(self.dominant_share(study), study) for study in per_study]
        heapq.heapify(heap)
        placed: list[str] = []
        failed = _Failures()
        while heap:
            _, study = heapq.heappop(heap)
            jobs = per_study[study]
            while cursor[study] < len(jobs):
                queued = jobs[cursor[study]]
                cursor[study] += 1
                if failed.covers(queued):
                    continue
                if self._try_place(queued, now):
                    placed.append(queued.needs.id)
                    heapq.heappush(heap, (self.dominant_share(study), study))
                    break
                failed.add(queued)
                if self.held_for is None:
                    self._hold_for(queued, now)
        return placed

    def _try_place(self, queued: _Queued, now: float) -> bool:
        """Reserve ``min_sites`` sites for the job if it can start now."""
        needs = queued.needs
        ok = self.eligible(queued, now)
        count = int(ok.sum())
        if count < needs.min_sites:
            return False
        columns = self._best(np.flatnonzero(ok), needs, needs.min_sites)
        del self._queued[needs.id]
        self._reserve(queued, columns, now)
        return True

    def _extend(self, job_id: str, now: float) -> Placement:
        """Give a job started in this pass more sites, up to its ``max_sites``, from what is free."""
        run = self._running[job_id]
        needs = run.needs
        room = (needs.max_sites or self.fleet.n) - len(run.columns)
        if room > 0:
            ok = self.eligible(run.queued or _Queued(needs, run.seq), now)
            ok[run.columns] = False
            more = self._best(np.flatnonzero(ok), needs, room)
            if len(more):
                self._take(run, more)
        return self._placement(job_id, run)

    def _best(self, columns: np.ndarray, needs: JobNeeds, want: int) -> np.ndarray:
        """Up to ``want`` of ``columns``, the best fits first, in column order."""
        if want < len(columns):
            columns = columns[np.argpartition(self._fit_score(columns, needs), want - 1)[:want]]
        return np.sort(columns)

    def _fit_score(self, columns: np.ndarray, needs: JobNeeds) -> np.ndarray:
        """Lower is better: leave free GPUs to jobs that need them, then pack (best fit)."""
        f = self.fleet
        free_cpu = f.total_cpu[columns] - f.used_cpu[columns] - f.ext_cpu[columns]
        free_gpu = f.total_gpu[columns] - f.used_gpu[columns]
        score = (free_cpu - needs.cpu) / np.maximum(f.total_cpu[columns], 1.0)
        if needs.gpus == 0:
            score = score + _GPU_SITE_PENALTY * (free_gpu > 0)
        else:
            score = score + (free_gpu - needs.gpus) / np.maximum(f.total_gpu[columns], 1.0)
        return score

    def eligible(self, queued: _Queued, now: float, holds: bool = True) -> np.ndarray:
        """Which sites could take this job now: a boolean per site column."""
        needs = queued.needs
        free = self.fleet.free(self.fleet.study(needs.study), now)
        ok = self._candidates(queued) & free.usable
        ok &= free.cpu >= needs.cpu - 1e-9
        ok &= free.memory >= needs.memory_bytes
        if needs.gpus:
            ok &= free.gpus >= needs.gpus
        ok &= free.open_s >= needs.duration_s
        ok &= free.budget_s + 1e-6 >= needs.cpu * needs.duration_s
        if queued.excluded:
            for column, until in list(queued.excluded.items()):
                if until <= now:
                    del queued.excluded[column]
                else:
                    ok[column] = False
        if holds and self.held_for not in (None, needs.id) and len(self._holds) == len(ok):
            ok &= now + needs.duration_s <= self._holds
        return ok

    def _candidates(self, queued: _Queued) -> np.ndarray:
        f = self.fleet
        if queued.mask is None or queued.mask_version != f.version:
            if queued.needs.sites is None:
                mask = np.ones(f.n, dtype=bool)
            else:
                mask = np.zeros(f.n, dtype=bool)
                columns = [f.index[s] for s in queued.needs.sites if s in f.index]
                mask[columns] = True
            queued.mask, queued.mask_version = mask, f.version
        return queued.mask

    # --- reservations ------------------------------------------------------------------

    def _reserve(self, queued: _Queued, columns: np.ndarray, now: float) -> Placement:
        needs = queued.needs
        empty = np.zeros(0, dtype=np.int64)
        charge = needs.cpu * needs.duration_s
        run = _Running(needs, empty, now, now + needs.duration_s, empty, charge, queued.seq, queued)
        self._running[needs.id] = run
        self._take(run, columns)
        return self._placement(needs.id, run)

    def _take(self, run: _Running, columns: np.ndarray) -> None:
        """Reserve ``run``'s needs at ``columns`` and charge each site's budget for the day."""
        f, needs = self.fleet, run.needs
        row = f.study(needs.study)
        f.state += 1
        f.used_cpu[columns] += needs.cpu
        f.used_mem[columns] += needs.memory_bytes
        f.used_gpu[columns] += needs.gpus
        f.st_jobs[row, columns] += 1
        f.st_cpu[row, columns] += needs.cpu
        f.st_mem[row, columns] += needs.memory_bytes
        f.st_gpu[row, columns] += needs.gpus
        day = f.local_day(run.started_at)[columns]
        stale = f.spent_day[row, columns] != day
        f.spent_s[row, columns] = np.where(stale, 0.0, f.spent_s[row, columns]) + run.charged_s
        f.spent_day[row, columns] = day
        usage = self._usage.setdefault(needs.study, np.zeros(3))
        usage += np.array([needs.cpu, needs.memory_bytes, needs.gpus]) * len(columns)
        run.columns = np.concatenate([run.columns, columns])
        run.day = np.concatenate([run.day, day])
        for c in columns.tolist():
            self._by_site.setdefault(c, set()).add(needs.id)

    def _release(self, run: _Running, which: np.ndarray, refund_s: float) -> None:
        """Release ``run``'s reservations at the sites ``which`` selects (a mask over its columns)."""
        f, needs = self.fleet, run.needs
        columns = run.columns[which]
        if len(columns) == 0:
            return
        row = f.study(needs.study)
        f.state += 1
        f.used_cpu[columns] -= needs.cpu
        f.used_mem[columns] -= needs.memory_bytes
        f.used_gpu[columns] -= needs.gpus
        f.st_jobs[row, columns] -= 1
        f.st_cpu[row, columns] -= needs.cpu
        f.st_mem[row, columns] -= needs.memory_bytes
        f.st_gpu[row, columns] -= needs.gpus
        # The budget is refunded only on the day it was charged (the site's day may have turned).
        refundable = columns[f.spent_day[row, columns] == run.day[which]]
        f.spent_s[row, refundable] = np.maximum(0.0, f.spent_s[row, refundable] - refund_s)
        self._usage[needs.study] -= np.array([needs.cpu, needs.memory_bytes, needs.gpus]) * len(columns)
        for c in columns.tolist():
            self._by_site.get(c, set()).discard(needs.id)

    def _placement(self, job_id: str, run: _Running) -> Placement:
        names = tuple(self.fleet.names[c] for c in run.columns.tolist())
        return Placement(job_id, run.needs.study, names, run.started_at, run.expected_end)

    # --- fairness ----------------------------------------------------------------------

    def dominant_share(self, study: str) -> float:
        """The study's largest share of any fleet resource it holds, over its weight."""
        usage = self._usage.get(study)
        if usage is None:
            return 0.0
        totals = self.fleet.totals()
        shares = np.divide(usage, totals, out=np.zeros(3), where=totals > 0)
        return float(shares.max()) / self.weights.get(study, 1.0)

    def _demand(self, needs: JobNeeds, totals: tuple[float, float, float]) -> float:
        """The dominant share the job adds to its study once it runs on ``min_sites`` sites."""
        cpu, mem, gpus = totals
        ask = max(
            needs.cpu / cpu if cpu else 0.0,
            needs.memory_bytes / mem if mem else 0.0,
            needs.gpus / gpus if gpus else 0.0,
        )
        return ask * needs.min_sites / self.weights.get(needs.study, 1.0)

    def _hold_for(self, queued: _Queued, now: float) -> None:
        """EASY backfilling: hold the sites ``queued`` gets soonest, from when they free up."""
        ready = explain.ready_times(self, queued, now)
        finite = np.flatnonzero(np.isfinite(ready))
        if len(finite) < queued.needs.min_sites:
            return
        soonest = finite[np.argsort(ready[finite], kind="stable")[: queued.needs.min_sites]]
        shadow = float(ready[soonest].max())
        if shadow <= now:
            return  # it fits now on its own; a hold would change nothing
        self._holds[soonest] = shadow
        self.held_for = queued.needs.id

    # --- reporting ---------------------------------------------------------------------

    def _order(self) -> list[_Queued]:
        """Queued jobs in the order the policy would consider them."""
        if self.policy == "fifo":
            return sorted(self._queued.values(), key=lambda q: q.seq)
        keyed = []
        per_study: dict[str, list[_Queued]] = {}
        for queued in self._queued.values():
            per_study.setdefault(queued.needs.study, []).append(queued)
        totals = tuple(self.fleet.totals().tolist())
        for study, jobs in per_study.items():
            share = self.dominant_share(study)
            for queued in sorted(jobs, key=lambda q: (-q.needs.priority, q.seq)):
                keyed.append((share, queued.seq, queued))
                share += self._demand(queued.needs, totals)  # the study's share once this one runs
        return [q for _, _, q in sorted(keyed, key=lambda k: (k[0], k[1]))]

    def position(self, job_id: str) -> int:
        for number, queued in enumerate(self._order(), 1):
            if queued.needs.id == job_id:
                return number
        raise errors.NotFound(f"job {job_id} is not queued")

    def waiting(self, now: float) -> list[Waiting]:
        """Every queued job with its position and why it waits."""
        return [explain.why_waiting(self, q, number, now) for number, q in enumerate(self._order(), 1)]

    def earliest_ends(self) -> dict[str, np.ndarray]:
        """Per site, the soonest expected end of any running job ("any"), of one holding GPUs
        ("gpu") and of each study's ("study:NAME"), cached until the reservations change."""
        if self._ends[0] == self.fleet.state:
            return self._ends[1]
        n = self.fleet.n
        ends: dict[str, np.ndarray] = {"any": np.full(n, math.inf), "gpu": np.full(n, math.inf)}
        for run in self._running.values():
            at = np.full(len(run.columns), run.expected_end)
            np.minimum.at(ends["any"], run.columns, at)
            if run.needs.gpus:
                np.minimum.at(ends["gpu"], run.columns, at)
            study = ends.setdefault(f"study:{run.needs.study}", np.full(n, math.inf))
            np.minimum.at(study, run.columns, at)
        self._ends = (self.fleet.state, ends)
        return ends

    def running(self) -> list[Placement]:
        return [self._placement(job_id, run) for job_id, run in self._running.items()]

    def is_queued(self, job_id: str) -> bool:
        return job_id in self._queued

    def has_waiting(self) -> bool:
        return bool(self._queued)

    def queued_needs(self) -> list[JobNeeds]:
        return [q.needs for q in self._queued.values()]

    def running_on(self, site: str) -> list[str]:
        column = self.fleet.index.get(site)
        return sorted(self._by_site.get(column, ())) if column is not None else []

    def _check_possible(self, queued: _Queued) -> None:
        """FailedPrecondition when no ``min_sites`` candidate sites could hold the job even empty."""
        problem = explain.impossible(self, queued)
        if problem:
            raise errors.FailedPrecondition(problem)
