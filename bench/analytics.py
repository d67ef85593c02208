"""Federated queries: what policy checks, local computation and secure aggregation cost.

    python -m bench.analytics [--quick]

A real coordinator and three agents in this process (mTLS on loopback), each site holding
the same number of rows. Each figure is a ratio to a baseline measured in the same run:
- A secure count (two rounds, signed keys, masks) against the transport floor: two rounds of
  a ping sent to the three sites at once over the same control streams.
- A secure mean and a 100-bin histogram against computing the same pooled statistic directly
  with sqlite3 over every site's catalog file, one after another (what one process holding
  all the rows would do).
"""

from __future__ import annotations

import bisect
import math
import random
import sqlite3
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

from bench.common import median, parse_args, report
from cloud_coordinator.analytics.client import AnalyticsClient
from silolink.gen.control.v1 import control_pb2
from tests import support

SITES = ["hospital-a", "hospital-b", "hospital-c"]


def _write(path: Path, site: str, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        f.write("id,age,radius\n")
        for i in range(rows):
            f.write(f"{site}-{i},{rng.randint(20, 90)},{rng.uniform(5, 30):.5f}\n")
    return path


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    rows, repeats = (20_000, 10) if args.quick else (200_000, 30)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coordinator = support.start_coordinator(root / "coordinator", heartbeat_interval_s=2.0)
        agents = []
        try:
            for i, site in enumerate(SITES):
                support.enroll_site(coordinator, site, root / site)
                agent = support.start_agent(root / site)
                agents.append(agent)
                assert agent.wait_connected(10)
                agent.catalog.import_csv(_write(root / f"{site}.csv", site, rows, i), "patients")
            operator = support.operator(coordinator)
            client = AnalyticsClient(operator)
            hub = coordinator.hub

            def two_ping_rounds():
                for _ in range(2):
                    wait([hub.request(s, ping=control_pb2.PingCommand(payload=b"x" * 64)) for s in SITES])

            def secure(statistic, **kw):
                return lambda: client.run_query("patients", statistic, ["kind=hospital"], **kw)

            files = [a.layout.catalog_db for a in agents]

            def direct_mean():
                values = []
                for path in files:
                    conn = sqlite3.connect(path)
                    values += [v for (v,) in conn.execute("SELECT radius FROM patients WHERE radius IS NOT NULL")]
                    conn.close()
                return math.fsum(values) / len(values)

            edges = [5 + 0.25 * i for i in range(101)]

            def direct_histogram():
                counts = [0] * (len(edges) + 1)
                for path in files:
                    conn = sqlite3.connect(path)
                    for (v,) in conn.execute("SELECT radius FROM patients WHERE radius IS NOT NULL"):
                        counts[bisect.bisect_right(edges, v)] += 1
                    conn.close()
                return counts

            assert secure("count")()["count"] == rows * len(SITES)
            assert abs(secure("mean radius")()["mean"] - direct_mean()) < 1e-6
            floor = median(_timed(two_ping_rounds, repeats))
            count = median(_timed(secure("count"), repeats))
            mean = median(_timed(secure("mean radius"), repeats))
            base_mean = median(_timed(direct_mean, repeats))
            hist = median(_timed(secure("histogram radius", bins="5:30:100"), repeats))
            base_hist = median(_timed(direct_histogram, repeats))
            operator.close()
        finally:
            for agent in agents:
                agent.stop(0)
            coordinator.stop(0)
    ms = 1000
    report(
        f"bench.analytics: 3 sites x {rows:,} rows, medians of {repeats}",
        [
            ("secure count", f"{count * ms:.1f} ms", f"{count / floor:.1f}x two ping rounds ({floor * ms:.1f} ms)"),
            ("secure mean", f"{mean * ms:.1f} ms", f"{mean / base_mean:.2f}x direct sqlite3 ({base_mean * ms:.1f} ms)"),
            (
                "secure histogram, 100 bins",
                f"{hist * ms:.1f} ms",
                f"{hist / base_hist:.2f}x direct sqlite3 + bisect ({base_hist * ms:.1f} ms)",
            ),
        ],
        {
            "rows_per_site": rows,
            "sites": len(SITES),
            "count_ms": round(count * ms, 2),
            "two_ping_rounds_ms": round(floor * ms, 2),
            "count_vs_two_ping_rounds": round(count / floor, 2),
            "mean_ms": round(mean * ms, 2),
            "direct_mean_ms": round(base_mean * ms, 2),
            "mean_vs_direct": round(mean / base_mean, 3),
            "histogram_ms": round(hist * ms, 2),
            "direct_histogram_ms": round(base_hist * ms, 2),
            "histogram_vs_direct": round(hist / base_hist, 3),
        },
    )


if __name__ == "__main__":
    main()
