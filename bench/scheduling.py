"""Scheduling by capacity: the fair scheduler against FIFO placement on one simulated workload.

    python -m bench.scheduling [--quick]

200 sites with mixed CPUs, memory, GPUs, time zones, nights-only windows and daily compute
budgets per study; 500 jobs from 5 studies with mixed needs, arriving over the first hours.
Both policies run the same workload with the same seeds (the same arrivals, actual run
times and site declines); each is the same ``Scheduler`` core with the same checks, only
the order differs: FIFO starts jobs strictly in submission order (the first that cannot
start blocks the rest), the fair policy orders studies by dominant-resource share and
backfills behind a held reservation. The simulation checks every start on its own, from
its own record of what runs where, against each site's capacity, each study's share and
window, and each study's daily budget, so a scheduler bug shows up as a violation.

Last, the decision time: one job placed against 10,000 sites, and a whole pass over a
queue of hundreds of jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from bench.common import median, parse_args, percentile, report
from cloud_coordinator.scheduling import JobNeeds, Scheduler, SiteCapacity, StudyShare
from silolink import errors
from silolink import windows as win
from silolink.windows import TimeWindow

GIB = 1024**3
STUDIES = ("cardiology", "imaging", "oncology", "genomics", "quality")
# Regions and their time zones (hours from UTC): a region's sites share a night.
REGIONS = {"north": 1, "south": 0, "east": 8, "west": -5}
NIGHTS = (TimeWindow.parse("20:00-06:00"), TimeWindow.parse("22:00-07:00"))
DECLINE_P = 0.03
TICK_S = 300.0
# Monday 2026-11-02 08:00 UTC: the workload arrives during a working day.
EPOCH = 1793606400.0


@dataclass(frozen=True)
class SimSite:
    capacity: SiteCapacity
    region: str


@dataclass
class SimJob:
    needs: JobNeeds
    actual_s: float
    start: float = math.nan
    end: float = math.nan
    sites: tuple[str, ...] = ()


@dataclass
class Outcome:
    policy: str
    jobs: list[SimJob]
    refused: int
    violations: dict[str, int] = field(default_factory=dict)
    declines: int = 0
    passes: int = 0


def make_sites(count: int, seed: int) -> list[SimSite]:
    rng = random.Random(seed)
    sites = []
    for i in range(count):
        cpus = rng.choice((4, 8, 8, 16, 16, 32))
        gpus = rng.choice((0, 0, 0, 1, 2, 4))
        region = list(REGIONS)[i % len(REGIONS)]
        shares = {}
        for study in STUDIES:
            if rng.random() > 0.7:
                continue  # this site did not accept the study
            # Hospitals lend GPUs mostly at night; CPU work runs by day at most sites.
            night = rng.random() < (0.6 if study == "imaging" else 0.2)
            share = StudyShare(
                max_jobs=rng.choice((1, 2, 3)),
                cpu=cpus * rng.choice((0.25, 0.5, 0.5, 1.0)),
                memory_bytes=int(cpus * 4 * GIB * rng.choice((0.5, 0.5, 1.0))),
                gpus=gpus if (study == "imaging" or rng.random() < 0.3) else 0,
                windows=(rng.choice(NIGHTS),) if night else (),
                cpu_hours_per_day=cpus * rng.choice((6.0, 12.0)) if rng.random() < 0.4 else 0.0,
            )
            shares[study] = share
        capacity = SiteCapacity(f"site-{i:05d}", cpus, cpus * 4 * GIB, gpus, REGIONS[region] * 3600, shares)
        sites.append(SimSite(capacity, region))
    return sites


def make_jobs(count: int, sites: list[SimSite], seed: int, spread_s: float) -> list[SimJob]:
    """Jobs from each study, with needs typical of it, arriving at random over ``spread_s``."""
    rng = random.Random(seed)
    by_region = defaultdict(list)
    for site in sites:
        by_region[site.region].append(site.capacity.name)
    jobs = []
    for j in range(count):
        study = STUDIES[j % len(STUDIES)]
        if study == "cardiology":  # many sites, small and short
            cpu, mem, gpus, minutes, min_sites = rng.choice((1, 2)), 2, 0, rng.uniform(10, 60), rng.randint(4, 12)
        elif study == "imaging":  # a GPU, long
            cpu, mem, gpus, minutes, min_sites = 2, 8, 1, rng.uniform(30, 150), rng.randint(1, 3)
        elif study == "oncology":  # medium
            cpu, mem, gpus, minutes, min_sites = rng.choice((2, 4)), 8, 0, rng.uniform(30, 120), rng.randint(2, 6)
        elif study == "genomics":  # memory heavy
            cpu, mem, gpus, minutes, min_sites = 4, rng.choice((16, 24)), 0, rng.uniform(60, 180), rng.randint(1, 3)
        else:  # many tiny jobs
            cpu, mem, gpus, minutes, min_sites = 1, 1, 0, rng.uniform(5, 20), rng.randint(1, 3)
        region_pick = rng.random()
        if region_pick < 0.5:
            candidates = None
        else:
            regions = rng.sample(list(REGIONS), 2 if region_pick < 0.85 else 1)
            candidates = tuple(sorted(name for r in regions for name in by_region[r]))
        needs = JobNeeds(
            id=f"job-{j:04d}",
            study=study,
            cpu=cpu,
            memory_bytes=mem * GIB,
            gpus=gpus,
            duration_s=round(minutes * 60),
            min_sites=min_sites,
            max_sites=min_sites + rng.choice((0, 0, 1, 2)),
            priority=rng.choice((0, 0, 1, 2)),
            sites=candidates,
            submitted_at=EPOCH + rng.uniform(0, spread_s),
        )
        # Jobs declare a conservative expected duration; they end somewhat before it.
        jobs.append(SimJob(needs, actual_s=needs.duration_s * rng.uniform(0.6, 1.0)))
    return jobs


def declines(seed: int, job_id: str, site: str) -> bool:
    """Whether ``site`` declines ``job_id`` the first time it is offered: the same in every policy."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{site}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < DECLINE_P


class Checker:
    """The simulation's own record of what runs where, and every rule each start must keep."""

    def __init__(self, sites: list[SimSite]) -> None:
        self.caps = {s.capacity.name: s.capacity for s in sites}
        self.running: dict[str, list[SimJob]] = defaultdict(list)
        self.spent: dict[tuple[str, str, int], float] = defaultdict(float)
        self.violations = {"capacity": 0, "share": 0, "window": 0, "budget": 0}

    def start(self, job: SimJob) -> None:
        n = job.needs
        for name in job.sites:
            cap, share = self.caps[name], self.caps[name].shares.get(n.study)
            here = [r for r in self.running[name] if r.end > job.start] + [job]
            self.running[name] = here
            if (
                sum(r.needs.cpu for r in here) > cap.cpus + 1e-9
                or sum(r.needs.memory_bytes for r in here) > cap.memory_bytes
                or sum(r.needs.gpus for r in here) > cap.gpus
            ):
                self.violations["capacity"] += 1
            mine = [r for r in here if r.needs.study == n.study]
            if (
                share is None
                or len(mine) > share.max_jobs
                or sum(r.needs.cpu for r in mine) > share.cpu + 1e-9
                or sum(r.needs.memory_bytes for r in mine) > share.memory_bytes
                or sum(r.needs.gpus for r in mine) > share.gpus
            ):
                self.violations["share"] += 1
                continue
            if not win.fits(share.windows, cap.utc_offset_s, job.start, job.actual_s):
                self.violations["window"] += 1
            if share.cpu_hours_per_day:
                day = int((job.start + cap.utc_offset_s) // win.DAY_S)
                self.spent[(name, n.study, day)] += n.cpu * job.actual_s
                if self.spent[(name, n.study, day)] > share.cpu_hours_per_day * 3600 + 1e-6:
                    self.violations["budget"] += 1


def simulate(policy: str, sites: list[SimSite], workload: list[SimJob], seed: int) -> Outcome:
    jobs = {j.needs.id: SimJob(j.needs, j.actual_s) for j in workload}
    scheduler = Scheduler(policy=policy)
    for site in sites:
        scheduler.put_site(site.capacity)
    checker = Checker(sites)
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, job)
    for job in jobs.values():
        heapq.heappush(events, (job.needs.submitted_at, 1, "arrive", job.needs.id))
    outcome = Outcome(policy, list(jobs.values()), refused=0)
    offered: set[tuple[str, str]] = set()
    next_tick = EPOCH
    while events:
        now = events[0][0]
        if scheduler.queued_needs() and next_tick < now:
            now = next_tick  # a periodic pass: windows open and budgets reset with no event
        while events and events[0][0] <= now:
            _, _, kind, job_id = heapq.heappop(events)
            if kind == "arrive":
                try:
                    scheduler.submit(jobs[job_id].needs)
                except errors.FailedPrecondition:  # a job no sites could ever hold
                    outcome.refused += 1
            else:
                scheduler.finish(job_id, now)
        outcome.passes += 1
        for placement in scheduler.schedule(now):
            current = placement
            for site in placement.sites:
                if (placement.job_id, site) not in offered and declines(seed, placement.job_id, site):
                    offered.add((placement.job_id, site))
                    outcome.declines += 1
                    current = scheduler.decline(placement.job_id, site, now)
                    if current is None:
                        break
            if current is None:
                continue
            job = jobs[current.job_id]
            job.start, job.sites = now, current.sites
            job.end = now + job.actual_s
            checker.start(job)
            heapq.heappush(events, (job.end, 0, "finish", current.job_id))
        next_tick = now + TICK_S
    outcome.violations = checker.violations
    return outcome


def makespan(outcome: Outcome) -> float:
    """From the first arrival to the last completion."""
    done = [j.end for j in outcome.jobs if not math.isnan(j.start)]
    return max(done) - min(j.needs.submitted_at for j in outcome.jobs) if done else 0.0


def response_by_study(outcome: Outcome) -> dict[str, float]:
    """Each study's mean response time (wait plus run), over its completed jobs."""
    times = defaultdict(list)
    for j in outcome.jobs:
        if not math.isnan(j.start):
            times[j.needs.study].append(j.end - j.needs.submitted_at)
    return {study: statistics.fmean(v) for study, v in times.items()}


def summarize(outcome: Outcome, sites: list[SimSite], alone: dict[str, float]) -> dict:
    done = [j for j in outcome.jobs if not math.isnan(j.start)]
    span = makespan(outcome)
    waits = defaultdict(list)
    slowdowns = defaultdict(list)
    for j in done:
        wait = j.start - j.needs.submitted_at
        waits[j.needs.study].append(wait)
        # Bounded slowdown (Feitelson): a job's time in the system over its run time, with
        # runs shorter than 10 minutes counted as 10 so tiny jobs do not dominate.
        slowdowns[j.needs.study].append(max(1.0, (wait + j.actual_s) / max(j.actual_s, 600.0)))
    cpu_total = sum(s.capacity.cpus for s in sites)
    gpu_total = sum(s.capacity.gpus for s in sites)
    cpu_used = sum(j.needs.cpu * len(j.sites) * j.actual_s for j in done)
    gpu_used = sum(j.needs.gpus * len(j.sites) * j.actual_s for j in done)
    mean_slowdown = [statistics.fmean(slowdowns[s]) for s in STUDIES if slowdowns[s]]
    mean_wait = [statistics.fmean(waits[s]) for s in STUDIES if waits[s]]
    shared = response_by_study(outcome)
    # Each study's cost of sharing: its mean response time among all studies over the same
    # jobs' response time with the fleet to itself (the same policy, the same shares).
    sharing = {s: shared[s] / alone[s] for s in STUDIES if s in shared and s in alone}
    return {
        "makespan_h": span / 3600,
        "wait_h": {s: statistics.fmean(waits[s]) / 3600 if waits[s] else math.nan for s in STUDIES},
        "slowdown": {s: statistics.fmean(slowdowns[s]) if slowdowns[s] else math.nan for s in STUDIES},
        "cpu_util": cpu_used / (cpu_total * span),
        "gpu_util": gpu_used / (gpu_total * span) if gpu_total else 0.0,
        "jain_slowdown": jain(mean_slowdown),
        "sharing_cost": sharing,
        "jain_sharing": jain(list(sharing.values())),
        "jain_wait": jain(mean_wait),
        "completed": len(done),
        "refused": outcome.refused,
        "violations": sum(outcome.violations.values()),
        "violations_by_kind": outcome.violations,
        "declines": outcome.declines,
        "passes": outcome.passes,
    }


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    if not values:
        return math.nan
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def decision_times(site_count: int, queue_len: int, seed: int) -> dict:
    """Placement against ``site_count`` sites, with the fleet busy and ``queue_len`` jobs queued."""
    sites = make_sites(site_count, seed)
    scheduler = Scheduler()
    for site in sites:
        scheduler.put_site(site.capacity)
    now = EPOCH + 3600
    # Fill the fleet: submit and start jobs until a pass leaves ``queue_len`` of them waiting.
    batch = 0
    while len(scheduler.queued_needs()) < queue_len:
        for job in make_jobs(queue_len, sites, seed + batch, 60):
            try:
                scheduler.submit(dataclasses.replace(job.needs, id=f"{job.needs.id}-{batch}"))
            except errors.FailedPrecondition:
                pass  # no sites could ever hold it
        scheduler.schedule(now)
        batch += 1
    queued = list(scheduler._queued.values())
    per_job, cpu_per_job = [], []
    for queued_job in queued:
        # A decision from scratch: what each study can still get is recomputed (as after any
        # placement), then the sites that could take the job now, then the best of them.
        # Wall time includes preemption by other processes on a shared machine; thread CPU
        # time does not.
        scheduler.fleet.state += 1
        c0, t0 = time.thread_time(), time.perf_counter()
        ok = scheduler.eligible(queued_job, now)
        columns = np.flatnonzero(ok)
        if len(columns) >= queued_job.needs.min_sites:
            scheduler._best(columns, queued_job.needs, queued_job.needs.min_sites)
        per_job.append(time.perf_counter() - t0)
        cpu_per_job.append(time.thread_time() - c0)
    t0 = time.perf_counter()
    waiting = scheduler.waiting(now)
    explain_s = time.perf_counter() - t0
    for run in scheduler.running()[: len(scheduler.running()) // 10]:
        scheduler.finish(run.job_id, now + 60)  # a tenth of the running jobs end, so the pass starts some
    t0 = time.perf_counter()
    started = scheduler.schedule(now + 60)
    pass_s = time.perf_counter() - t0
    return {
        "sites": site_count,
        "queued": len(queued),
        "running": len(scheduler.running()),
        "decision_ms_p50": median(per_job) * 1e3,
        "decision_ms_p99": percentile(per_job, 99) * 1e3,
        "decision_cpu_ms_p99": percentile(cpu_per_job, 99) * 1e3,
        "pass_ms": pass_s * 1e3,
        "pass_started": len(started),
        "explain_all_ms": explain_s * 1e3,
        "explained": len(waiting),
    }


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    seeds = (1,) if args.quick else (1, 2, 3)
    results: dict[str, list[dict]] = {"fair": [], "fifo": []}
    for seed in seeds:
        sites = make_sites(200, seed)
        workload = make_jobs(500, sites, seed + 100, spread_s=3600)
        for policy in results:
            t0 = time.perf_counter()
            outcome = simulate(policy, sites, workload, seed)
            sim_s = time.perf_counter() - t0
            alone, alone_makespan = {}, 0.0
            for study in STUDIES:
                own = simulate(policy, sites, [j for j in workload if j.needs.study == study], seed)
                alone.update(response_by_study(own))
                alone_makespan = max(alone_makespan, makespan(own))
            summary = summarize(outcome, sites, alone)
            summary["slowest_alone_h"] = alone_makespan / 3600
            summary["sim_s"] = sim_s
            results[policy].append(summary)
    fair, fifo = results["fair"], results["fifo"]

    def med(runs: list[dict], key: str) -> float:
        return median([r[key] for r in runs])

    ratios = [b["makespan_h"] / a["makespan_h"] for a, b in zip(fair, fifo, strict=True)]
    ratio = median(ratios)
    big = decision_times(10_000, 200 if args.quick else 500, seed=7)
    rows = [
        ("makespan (h), fair / FIFO", f"{med(fair, 'makespan_h'):.2f} / {med(fifo, 'makespan_h'):.2f}",
         f"FIFO / fair = {ratio:.2f}x (per seed {', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.3x)"),
        ("  slowest study alone (h)", f"{med(fair, 'slowest_alone_h'):.2f}",
         "the fair policy with the fleet given to one study at a time: a bound on the makespan"),
    ]  # fmt: skip
    for study in STUDIES:
        w_fair = median([r["wait_h"][study] for r in fair])
        w_fifo = median([r["wait_h"][study] for r in fifo])
        rows.append((f"mean wait, {study} (h)", f"{w_fair:.2f} / {w_fifo:.2f}", "fair / FIFO"))
    rows += [
        ("CPU utilization", f"{med(fair, 'cpu_util'):.1%} / {med(fifo, 'cpu_util'):.1%}",
         "fair / FIFO: CPU-time used over the fleet's CPUs during the makespan"),
        ("GPU utilization", f"{med(fair, 'gpu_util'):.1%} / {med(fifo, 'gpu_util'):.1%}", "fair / FIFO"),
        ("Jain index, cost of sharing", f"{med(fair, 'jain_sharing'):.3f} / {med(fifo, 'jain_sharing'):.3f}",
         "fair / FIFO, across studies' response time shared over alone (target >= 0.9)"),
        ("Jain index, bounded slowdown", f"{med(fair, 'jain_slowdown'):.3f} / {med(fifo, 'jain_slowdown'):.3f}",
         "fair / FIFO, across studies' mean (wait + run) / max(run, 10 min)"),
        ("Jain index, mean wait", f"{med(fair, 'jain_wait'):.3f} / {med(fifo, 'jain_wait'):.3f}",
         "fair / FIFO (near-zero waits make this index jumpy)"),
        ("violations", f"{max(r['violations'] for r in fair)} / {max(r['violations'] for r in fifo)}",
         "capacity, share, window or budget broken at any start, worst seed (target 0)"),
        ("jobs completed / refused", f"{med(fair, 'completed'):.0f} / {med(fair, 'refused'):.0f}",
         f"of 500; FIFO {med(fifo, 'completed'):.0f} / {med(fifo, 'refused'):.0f}"),
        ("site declines", f"{med(fair, 'declines'):.0f} / {med(fifo, 'declines'):.0f}",
         "placed elsewhere or waited; fair / FIFO"),
        ("decision at 10,000 sites (ms)", f"{big['decision_ms_p50']:.2f}",
         f"median; p99 {big['decision_ms_p99']:.2f} ms wall, {big['decision_cpu_ms_p99']:.2f} ms CPU; "
         f"{big['queued']} queued, {big['running']} running (target < 10 ms)"),
        ("whole pass at 10,000 sites (ms)", f"{big['pass_ms']:.0f}",
         f"over {big['queued']} queued jobs after a tenth of the running ones ended: {big['pass_started']} started"),
        ("explaining the queue (ms)", f"{big['explain_all_ms']:.0f}", f"why each of {big['explained']} jobs waits"),
    ]  # fmt: skip
    figures = {
        "seeds": list(seeds),
        "makespan_h_fair": med(fair, "makespan_h"),
        "makespan_h_fifo": med(fifo, "makespan_h"),
        "makespan_ratio_fifo_over_fair": ratio,
        "makespan_ratios": ratios,
        "slowest_study_alone_h": med(fair, "slowest_alone_h"),
        "wait_h_fair": {s: median([r["wait_h"][s] for r in fair]) for s in STUDIES},
        "wait_h_fifo": {s: median([r["wait_h"][s] for r in fifo]) for s in STUDIES},
        "cpu_util_fair": med(fair, "cpu_util"),
        "cpu_util_fifo": med(fifo, "cpu_util"),
        "gpu_util_fair": med(fair, "gpu_util"),
        "gpu_util_fifo": med(fifo, "gpu_util"),
        "jain_sharing_fair": med(fair, "jain_sharing"),
        "jain_sharing_fifo": med(fifo, "jain_sharing"),
        "jain_slowdown_fair": med(fair, "jain_slowdown"),
        "jain_slowdown_fifo": med(fifo, "jain_slowdown"),
        "jain_wait_fair": med(fair, "jain_wait"),
        "jain_wait_fifo": med(fifo, "jain_wait"),
        "violations_fair": max(r["violations"] for r in fair),
        "violations_fifo": max(r["violations"] for r in fifo),
        "completed_fair": med(fair, "completed"),
        "completed_fifo": med(fifo, "completed"),
        "refused": med(fair, "refused"),
        "declines_fair": med(fair, "declines"),
        "decision_ms_p50_10k": big["decision_ms_p50"],
        "decision_ms_p99_10k": big["decision_ms_p99"],
        "decision_cpu_ms_p99_10k": big["decision_cpu_ms_p99"],
        "pass_ms_10k": big["pass_ms"],
        "explain_all_ms_10k": big["explain_all_ms"],
        "queued_10k": big["queued"],
        "running_10k": big["running"],
        "sim_s_fair": med(fair, "sim_s"),
        "sim_s_fifo": med(fifo, "sim_s"),
    }
    report("bench.scheduling: fair scheduler vs FIFO, 200 sites, 500 jobs, 5 studies", rows, figures)


if __name__ == "__main__":
    main()
