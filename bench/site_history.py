"""Sites' resource history in the coordinator's memory: what ten thousand full rings cost,
and what sampling adds to a heartbeat, against a heartbeat without history in the same run.

    python -m bench.site_history [--quick]

Memory: 10,000 sites, each sent heartbeats until its ring is full ([sites] resource_samples,
360 by default), measured with tracemalloc (numpy reports its buffers to it) and as the
process's resident set growth. Time: ``Presence.record`` (what the control stream calls for
each heartbeat) with the history and without it, for heartbeats inside an interval (most
of them: only the first of each interval is kept) and for the ones kept; and reading one
site's full history as ``GetSite`` does.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from bench.common import median, parse_args, report
from cloud_coordinator.sites.history import ResourceHistory
from cloud_coordinator.sites.presence import Presence
from cloud_coordinator.sites.store import SiteStore
from silolink.config import CoordinatorSitesConfig
from silolink.db import open_database
from silolink.gen.common.v1.site_pb2 import ResourceReport

SITES = 10_000
DEFAULTS = CoordinatorSitesConfig()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def reports(n: int) -> list[ResourceReport]:
    return [
        ResourceReport(
            cpu_count=8,
            load_average_1m=0.5 + (i % 7) / 10,
            memory_total_bytes=2**34,
            memory_available_bytes=2**33 + i * 4096,
            disk_free_bytes=2**40 - i * 2**20,
            agent_version="0.1.0",
        )
        for i in range(n)
    ]


def fill(history: ResourceHistory, names: list[str], samples: int, interval_s: float) -> float:
    """Every site reports once per interval until its ring is full; seconds taken."""
    report = reports(1)[0]
    started = time.perf_counter()
    for k in range(samples):
        at = 1_700_000_000.0 + k * interval_s
        for name in names:
            history.add(name, at, report)
    return time.perf_counter() - started


def per_call_us(fn, calls: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        times.append((time.perf_counter() - started) / calls * 1e6)
    return median(times)


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    repeats = 3 if args.quick else 9
    capacity, interval = DEFAULTS.resource_samples, DEFAULTS.resource_interval_s
    names = [f"site-{i:05}" for i in range(SITES)]

    # -- memory: ten thousand full rings ----------------------------------------------------
    # tracemalloc slows every allocation several times over: it watches a tenth of the sites
    # (scaled up), the resident set all of them.
    traced_sites = SITES // 10
    tracemalloc.start()
    watched = ResourceHistory(capacity, interval)
    fill(watched, names[:traced_sites], capacity, interval)
    traced = tracemalloc.get_traced_memory()[0] / traced_sites * SITES
    tracemalloc.stop()
    del watched
    gc.collect()
    rss_before = rss_bytes()
    history = ResourceHistory(capacity, interval)
    fill_s = fill(history, names, capacity, interval)
    gc.collect()
    rss_growth = rss_bytes() - rss_before
    buffers = history.bytes_held()
    assert len(history.samples(names[0])) == capacity

    # -- time: a heartbeat with and without the history ---------------------------------------
    db = open_database(None)
    store = SiteStore(db)
    beats = reports(1000)
    without = Presence(store, 60.0)
    sampled = Presence(store, 60.0, history=ResourceHistory(capacity, interval))
    clock = [1_700_000_000.0]
    for p in (without, sampled):
        p._clock = lambda: clock[0]  # noqa: SLF001 - a fixed clock: every call inside one interval
    calls = 20_000
    for p in (without, sampled):  # warm: each site has its ring
        for i in range(1000):
            p.record(names[i], beats[i])
    base_us = per_call_us(lambda i: without.record(names[i % 1000], beats[i % 1000]), calls, repeats)
    skip_us = per_call_us(lambda i: sampled.record(names[i % 1000], beats[i % 1000]), calls, repeats)

    def kept(i: int) -> None:  # every call starts a new interval for its site
        clock[0] += interval / 1000
        sampled.record(names[i % 1000], beats[i % 1000])

    keep_us = per_call_us(kept, calls, repeats)
    read_ms = median(
        [(lambda t: (history.samples(names[7]), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(50)]
    ) * 1000  # fmt: skip
    db.close()

    per_site = traced / SITES
    rows = [
        ("sites", f"{SITES:,}", f"{capacity} samples each, one per {interval:g} s ({capacity * interval / 3600:g} h)"),
        (
            "history, traced",
            f"{traced / 2**20:.1f} MiB",
            f"{per_site:,.0f} bytes a site (tracemalloc, 1,000 sites x 10)",
        ),
        ("sample buffers", f"{buffers / 2**20:.1f} MiB", f"{buffers / SITES / capacity:.0f} bytes a sample"),
        ("resident set growth", f"{rss_growth / 2**20:.1f} MiB", "the process, after filling every ring"),
        ("filling every ring", f"{fill_s:.1f} s", f"{fill_s / (SITES * capacity) * 1e6:.2f} us a kept sample"),
        ("heartbeat, no history", f"{base_us:.2f} us", "Presence.record (baseline)"),
        ("heartbeat, inside an interval", f"{skip_us:.2f} us", f"{skip_us / base_us:.2f}x the baseline"),
        ("heartbeat, sample kept", f"{keep_us:.2f} us", f"{keep_us / base_us:.2f}x the baseline"),
        ("read one site's history", f"{read_ms:.2f} ms", f"{capacity} samples, as GetSite reads them"),
    ]
    figures = {
        "sites": SITES,
        "samples_per_site": capacity,
        "interval_s": interval,
        "history_traced_mib": round(traced / 2**20, 1),
        "history_bytes_per_site": round(per_site),
        "sample_buffer_bytes": buffers,
        "rss_growth_mib": round(rss_growth / 2**20, 1),
        "fill_s": round(fill_s, 2),
        "heartbeat_baseline_us": round(base_us, 3),
        "heartbeat_inside_interval_us": round(skip_us, 3),
        "heartbeat_sample_kept_us": round(keep_us, 3),
        "inside_interval_vs_baseline": round(skip_us / base_us, 2),
        "sample_kept_vs_baseline": round(keep_us / base_us, 2),
        "read_history_ms": round(read_ms, 3),
        "repeats": repeats,
    }
    report(f"Resource history of {SITES:,} sites in the coordinator's memory", rows, figures)


if __name__ == "__main__":
    main()
