"""The coordinator's work queue: the scheduler fed with what sites give and report, offers
sent to the sites it places a job on, and the queue kept in the database across restarts.

A capability (training) submits a job with what it needs and registers a launcher; when the
scheduler places the job, each chosen site is asked first (``offer_work`` on its control
stream). A site that declines (busy, or outside its allowance) is released and skipped for
a while; the job starts on the rest if enough remain, or waits. A site whose policy refuses
the job (PERMISSION_DENIED or FAILED_PRECONDITION: its allowance lacks the dataset or app,
it has not accepted the study) will not say yes later unless it changes what it gives: once
the sites that have not refused are too few, the job fails at once, naming each refusal,
instead of waiting forever. Then the launcher runs the job on exactly the sites that said
yes. The capability tells the queue when the job ends.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from silolink import errors
from silolink import windows as win
from silolink.gen.studies.v1 import studies_pb2 as pb

from .model import GIB, JobNeeds, Placement, SiteCapacity, StudyShare, Waiting
from .scheduler import Scheduler
from .store import QueueStore

log = logging.getLogger(__name__)
DEFAULT = "default"
# What a site gives the default study unless it declared otherwise: all of itself, any time.
UNLIMITED_JOBS = 1_000_000
# How a site says its own policy refuses a job: an answer that will not change until the
# site changes what it allows. Any other no (busy, not connected, no answer) may pass.
LASTING_REFUSALS = (errors.PermissionDenied, errors.FailedPrecondition)


@dataclass(frozen=True)
class Launcher:
    """How a capability starts a placed job, and fails one the queue cannot keep."""

    launch: Callable[[str, list[str]], None]  # (job id, sites that said yes)
    fail: Callable[[str, str], None]  # (job id, reason)


@dataclass(frozen=True)
class Offer:
    """What the sites are told about the job they are offered (they check their allowance)."""

    dataset: str = ""
    app: str = ""


class WorkQueue:
    def __init__(
        self,
        store: QueueStore,
        studies: Any,
        sites: Any,
        hub: Any,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        offer_timeout_s: float = 10.0,
        refresh_s: float = 30.0,
        heartbeat_load: bool = True,
        decline_cooldown_s: float = 600.0,
    ) -> None:
        self._heartbeat_load = heartbeat_load
        self._store = store
        self._studies = studies
        self._sites = sites
        self._hub = hub
        self._clock = clock
        self._tick_s = tick_s
        self._offer_timeout_s = offer_timeout_s
        self._refresh_s = refresh_s
        self._lock = threading.RLock()
        self.scheduler = Scheduler(policy="fair", decline_cooldown_s=decline_cooldown_s)
        self._launchers: dict[str, Launcher] = {}
        self._kinds: dict[str, str] = {}
        self._offers: dict[str, Offer] = {}
        self._refreshed_at = -1e18
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._orphans: list[tuple[str, str, str]] = []  # restored jobs no site can hold any more
        # Per site, how many times it changed what it gives: a refusal answered under terms
        # the site has since changed is not held against the job.
        self._terms: dict[str, int] = {}
        studies.on_change(lambda site, study: self._changed(site, study))
        self._restore()

    # --- capabilities ------------------------------------------------------------------

    def register(self, kind: str, launcher: Launcher) -> None:
        """Launch ``kind`` work with ``launcher``; restored jobs nobody can hold fail now."""
        self._launchers[kind] = launcher
        self.fail_orphans()
        if self._thread is None:  # the first capability is ready: place work from now on
            self.start()
        self._wake.set()

    def submit(self, kind: str, needs: JobNeeds, offer: Offer = Offer()) -> int:
        """Queue a job; its position. FailedPrecondition at once if no sites could ever hold it."""
        with self._lock:
            self._refresh(force=True)
            needs = replace(needs, submitted_at=needs.submitted_at or self._clock())
            position = self.scheduler.submit(needs)
            self._store.add(kind, needs, offer.dataset, offer.app)
            self._kinds[needs.id], self._offers[needs.id] = kind, offer
        self._wake.set()
        return position

    def finish(self, job_id: str) -> None:
        """The job ended (or never will): release what it holds, forget it."""
        with self._lock:
            if not self.scheduler.finish(job_id, self._clock()):
                self.scheduler.cancel(job_id)
            self._store.remove(job_id)
            self._kinds.pop(job_id, None)
            self._offers.pop(job_id, None)
        self._wake.set()

    def position(self, job_id: str) -> tuple[int, str] | None:
        """A queued job's place and why it waits; None once it is placed or unknown."""
        return self.positions([job_id]).get(job_id)

    def positions(self, job_ids: list[str]) -> dict[str, tuple[int, str]]:
        """Of ``job_ids``, each queued job's place and why it waits (one look at the queue)."""
        with self._lock:
            if not any(self.scheduler.is_queued(job_id) for job_id in job_ids):
                return {}
            wanted = set(job_ids)
            return {
                w.job_id: (w.position, w.reason) for w in self.scheduler.waiting(self._clock()) if w.job_id in wanted
            }

    def snapshot(self) -> tuple[list[Waiting], list[Placement], dict[str, float]]:
        with self._lock:
            self._refresh()
            now = self._clock()
            waiting, running = self.scheduler.waiting(now), self.scheduler.running()
            shares = {s: self.scheduler.dominant_share(s) for s in self._studies.weights()}
        return waiting, running, shares

    def known(self) -> set[str]:
        """Every job the queue holds, queued or placed."""
        with self._lock:
            return {entry.job_id for entry in self._store.entries()}

    def placement(self, job_id: str) -> tuple[str, ...] | None:
        """The sites a placed job holds now (fewer once a site left its study); None if not placed."""
        with self._lock:
            for placement in self.scheduler.running():
                if placement.job_id == job_id:
                    return placement.sites
        return None

    def needs_of(self, job_id: str) -> JobNeeds | None:
        with self._lock:
            for needs in self.scheduler.queued_needs():
                if needs.id == job_id:
                    return needs
            for entry in self._store.entries():
                if entry.job_id == job_id:
                    return entry.needs
        return None

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> WorkQueue:
        self._thread = threading.Thread(target=self._run, name="work-queue", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._offer_timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the queue must outlive one bad pass
                log.exception("a scheduling pass failed; the next one retries")
            self._wake.wait(self._tick_s)
            self._wake.clear()

    def tick(self) -> list[Placement]:
        """One pass: take in heartbeats, place what fits, offer it to its sites, launch what they take."""
        with self._lock:
            if not self.scheduler.has_waiting():
                return []  # nothing to place: no need to read ten thousand sites' reports
            self._refresh()
            self._report()
            placements = self.scheduler.schedule(self._clock())
        started = []
        for placement in placements:
            final = self._offer(placement)
            if final is not None:
                started.append(final)
        return started

    def _offer(self, placement: Placement) -> Placement | None:
        offer = self._offers.get(placement.job_id, Offer())
        needs = self.needs_of(placement.job_id)
        command = pb.OfferWorkCommand(
            job_id=placement.job_id, study=placement.study, dataset=offer.dataset, app=offer.app,
            cpu=needs.cpu if needs else 0, memory_bytes=needs.memory_bytes if needs else 0,
            gpus=needs.gpus if needs else 0, expected_duration_s=needs.duration_s if needs else 0,
        )  # fmt: skip
        kind = self._kinds.get(placement.job_id, "")
        if kind not in self._launchers:  # restored before its capability registered: wait for it
            with self._lock:
                self.scheduler.requeue(placement.job_id)
            log.debug("job %s waits for a launcher of %s work", placement.job_id, kind or "its")
            return None
        terms = {site: self._terms.get(site, 0) for site in placement.sites}
        futures: dict[str, concurrent.futures.Future | None] = {}
        for site in placement.sites:
            try:
                futures[site] = self._hub.request(site, offer_work=command)
            except errors.SiloError:
                futures[site] = None  # not connected: as good as a no
        declined: dict[str, tuple[str, bool]] = {}  # site: (its reason, whether its policy refused)
        deadline = time.monotonic() + self._offer_timeout_s
        for site, future in futures.items():
            if future is None:
                declined[site] = ("not connected", False)
                continue
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                declined[site] = (f"no answer within {self._offer_timeout_s:g} s", False)
            except errors.SiloError as e:
                declined[site] = (e.message, isinstance(e, LASTING_REFUSALS))
        current: Placement | None = placement
        with self._lock:
            now = self._clock()
            for site, (reason, lasting) in declined.items():
                log.info("site %s %s job %s: %s", site, "refused" if lasting else "declined", placement.job_id, reason)
                lasting = lasting and self._terms.get(site, 0) == terms[site]
                # Every decline is recorded, also those after the job went back to the queue.
                try:
                    current = self.scheduler.decline(placement.job_id, site, now, refusal=reason if lasting else None)
                except errors.NotFound:
                    return None  # stopped while its sites were asked: nothing left to record
            hopeless = self.scheduler.hopeless(placement.job_id) if current is None else ""
            if current is not None:
                self._store.placed(current.job_id, list(current.sites), now)
        if hopeless:
            self._fail(placement.job_id, hopeless)
            return None
        if current is None:
            return None  # back in the queue, in its place
        launcher = self._launchers.get(kind)
        try:
            if launcher is None:
                raise errors.Internal(f"no capability launches {kind or 'this'} work")
            launcher.launch(current.job_id, list(current.sites))
        except errors.SiloError as e:
            log.error("job %s could not start on %s: %s", current.job_id, ", ".join(current.sites), e.message)
            self.finish(current.job_id)
            if launcher is not None:
                launcher.fail(current.job_id, e.message)
            return None
        log.info("job %s (study %s) started on %s", current.job_id, current.study, ", ".join(current.sites))
        return current

    # --- the fleet ---------------------------------------------------------------------

    def _changed(self, site: str, study: str) -> None:
        """A site accepted, re-declared or left a study: new capacity; jobs there lose it.

        A job left with fewer than its minimum of sites fails, saying which site left."""
        too_few: list[tuple[str, str]] = []
        with self._lock:
            self._refreshed_at = -1e18
            # Its new terms may take work it refused: ask it again, hold nothing it said against jobs.
            self._terms[site] = self._terms.get(site, 0) + 1
            self.scheduler.forget(site)
            if self._studies.in_study(study, site):
                return
            for placement in self.scheduler.running():
                if placement.study == study and site in placement.sites:
                    left = self.scheduler.shrink(placement.job_id, site)
                    self._store.placed(placement.job_id, [s for s in placement.sites if s != site], self._clock())
                    needs = self.needs_of(placement.job_id)
                    minimum = needs.min_sites if needs else 1
                    if left < minimum:
                        too_few.append((placement.job_id, f"site {site} left study {study!r} mid-job; {left} site(s) "
                                        f"remain and the job needs at least {minimum}"))  # fmt: skip
                        continue
                    log.info(
                        "site %s left study %s: job %s goes on with %d site(s)", site, study, placement.job_id, left
                    )
        for job_id, reason in too_few:
            self._fail(job_id, reason)
        self._wake.set()

    def _fail(self, job_id: str, reason: str) -> None:
        """The job cannot go on: forget it, and tell its capability why."""
        log.info("job %s fails: %s", job_id, reason)
        kind = self._kinds.get(job_id, "")
        self.finish(job_id)
        launcher = self._launchers.get(kind)
        if launcher is not None:
            launcher.fail(job_id, reason)

    def _refresh(self, force: bool = False) -> None:
        """Rebuild the scheduler's sites from what they declared, when it may have changed."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < self._refresh_s:
            return
        self._refreshed_at = now
        self.scheduler.weights = self._studies.weights()
        shares: dict[str, dict[str, StudyShare]] = {}
        offsets: dict[str, int] = {}
        declared_default: set[str] = set()
        for membership in self._studies.shares():
            if not membership.share:
                continue  # the default study, accepted again on agent.toml's terms
            shares.setdefault(membership.site, {})[membership.study] = share_of(membership.share)
            offsets[membership.site] = int(membership.share.get("utc_offset_s", 0))
            if membership.study == DEFAULT:
                declared_default.add(membership.site)
        known = set(self.scheduler.fleet.index)
        for site in self._sites.list_sites():
            if site.enrolled_at is None or site.revoked_at is not None:
                if site.name in known:
                    self.scheduler.remove_site(site.name)
                continue
            resources = site.resources or {}
            cpus = float(resources.get("cpu_count", 0))
            memory = int(resources.get("memory_total_bytes", 0))
            gpus = len(resources.get("gpus", []))
            mine = shares.get(site.name, {})
            if site.name not in declared_default and self._studies.in_study(DEFAULT, site.name):
                mine[DEFAULT] = StudyShare(UNLIMITED_JOBS, cpus, memory, gpus)
            self.scheduler.put_site(SiteCapacity(site.name, cpus, memory, gpus, offsets.get(site.name, 0), mine))

    def _report(self) -> None:
        """Heartbeats (kept in memory by the site service): what each site has free now."""
        for site in self._sites.list_sites():
            resources = site.resources or {}
            if site.name not in self.scheduler.fleet.index or not resources:
                continue
            if self._heartbeat_load:
                load = float(resources.get("load_average_1m", 0.0))
                available = float(resources.get("memory_available_bytes", 0))
            else:  # declared capacity alone: only this queue's own reservations count
                load, available = 0.0, float(resources.get("memory_total_bytes", 0))
            self.scheduler.report(site.name, load, available, online=self._hub.is_connected(site.name))

    def _restore(self) -> None:
        """After a restart: the queue as it was, running jobs holding their sites again."""
        with self._lock:
            self._refresh(force=True)
            for entry in self._store.entries():
                self._kinds[entry.job_id] = entry.kind
                self._offers[entry.job_id] = Offer(entry.dataset, entry.app)
                if entry.state == "running":
                    self.scheduler.restore_running(entry.needs, entry.sites, entry.placed_at or entry.submitted_at)
                    continue
                try:
                    self.scheduler.submit(entry.needs)
                except errors.SiloError as e:
                    log.warning("queued job %s can no longer run anywhere: %s", entry.job_id, e.message)
                    self._store.remove(entry.job_id)
                    self._orphans.append((entry.kind, entry.job_id, e.message))

    def fail_orphans(self) -> None:
        """Tell capabilities about jobs restored from the database that no site can hold any more."""
        orphans, self._orphans = self._orphans, []
        for kind, job_id, reason in orphans:
            launcher = self._launchers.get(kind)
            if launcher is not None:
                launcher.fail(job_id, reason)


def share_of(share: dict[str, Any]) -> StudyShare:
    """A site's declared share (as stored from its AcceptStudy) for the scheduler."""
    return StudyShare(
        max_jobs=int(share.get("max_jobs", 0)),
        cpu=float(share.get("cpu", 0.0)),
        memory_bytes=int(share.get("memory_bytes", 0)),
        gpus=int(share.get("gpus", 0)),
        windows=win.parse_windows(share.get("windows", [])),
        cpu_hours_per_day=float(share.get("cpu_hours_per_day", 0.0)),
    )


__all__ = ["GIB", "Launcher", "Offer", "WorkQueue"]
