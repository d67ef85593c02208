"""Console latency with a large federation in the database: every page and JSON endpoint,
p50/p95/p99 over HTTPS, beside a static file served by the same server (the floor).

    python -m bench.console [--quick]

The coordinator's database holds 10,000 sites (tags, resources, certificates), 1,000
finished training jobs of 5 rounds each and 10,000 audit entries; the console runs in the
coordinator's process as `serve --console-listen` runs it, and each page goes through the
admin API as a logged-in admin (the same per-call checks as the CLI). Requests are sequential
over one keep-alive HTTPS connection. Target: p95 under 200 ms for every page.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sqlite3
import ssl
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import median, parse_args, percentile, report
from cloud_coordinator.accounts.client import AccountsClient
from cloud_coordinator.app import Coordinator, load_config
from cloud_coordinator.training.store import JobSpec
from silolink.config import ConsoleConfig
from tests import support

SITES, JOBS, ROUNDS = 10_000, 1_000, 5
PASSWORD = "bench console password"
TARGET_P95_S = 0.200


def populate(db_path: Path) -> None:
    """Sites, jobs with rounds and audit entries, written straight into the coordinator's tables."""
    now = time.time()
    rng = random.Random(7)
    conn = sqlite3.connect(db_path)
    sites = []
    for i in range(SITES):
        kind = "hospital" if i % 5 else "factory"
        tags = json.dumps({"region": rng.choice(["north", "south", "east", "west"]), "tier": str(i % 3)})
        resources = json.dumps(
            {"cpu_count": 8, "load_average_1m": 0.5, "memory_total_bytes": 2**34, "memory_available_bytes": 2**33}
        )
        sites.append(
            (
                f"site-{i:05}",
                kind,
                tags,
                now - 86400,
                now - 86000,
                now - rng.uniform(0, 600),
                "0.1.0",
                resources,
                now + 20 * 86400,
            )
        )
    conn.executemany(
        "INSERT INTO sites (name, kind, tags, created_at, enrolled_at, last_heartbeat, version, resources, "
        "cert_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        sites,
    )
    spec = dataclasses.asdict(JobSpec(app="tabular", dataset="patients", sites=("kind=hospital",), rounds=ROUNDS))
    jobs, rounds = [], []
    for j in range(JOBS):
        job_id = f"{j:012x}"
        jobs.append((job_id, json.dumps(spec), "completed", "operator:admin", now - 3600 + j, now - 3600 + j))
        for r in range(1, ROUNDS + 1):
            participants = json.dumps([f"site-{(j * 7 + k) % SITES:05}" for k in range(10)])
            metrics = json.dumps({"eval_accuracy": 0.8 + r / 100, "eval_loss": 0.5 - r / 50})
            rounds.append((job_id, r, participants, "[]", metrics, metrics, 0.15))
    conn.executemany(
        "INSERT INTO training_jobs (id, spec, state, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        jobs,
    )
    conn.executemany(
        "INSERT INTO training_rounds (job_id, round, participants, excluded, train_metrics, eval_metrics, duration_s)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rounds,
    )
    conn.commit()
    conn.close()


def measure(client: httpx.Client, path: str, repeats: int) -> list[float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code}")
    return times


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    repeats = 15 if args.quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "coordinator"
        support.start_coordinator(data_dir).stop(0)  # creates every table
        started = time.perf_counter()
        populate(data_dir / "state" / "coordinator.db")
        cfg = dataclasses.replace(
            load_config(data_dir, environ={}),
            **{**support.COORDINATOR_TEST_SETTINGS, "console": ConsoleConfig(listen="127.0.0.1:0", refresh_s=2)},
        )
        coordinator = Coordinator(data_dir, cfg).start()
        try:
            # 10,000 audit entries (one signature covers a batch through the hash links).
            coordinator.audit.record_batch(
                [("operator:admin", "site.add", f"site-{i:05}", {"kind": "hospital"}) for i in range(SITES)]
            )
            setup_s = time.perf_counter() - started
            with support.operator(coordinator) as admin:
                AccountsClient(admin).set_password(PASSWORD)
            port = coordinator.console_address.rsplit(":", 1)[1]
            context = ssl.create_default_context(cafile=str(coordinator.layout.ca_cert))
            with httpx.Client(base_url=f"https://localhost:{port}", verify=context, timeout=60) as client:
                page = client.get("/login").text
                token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
                client.post("/login", data={"csrf": token, "name": "admin", "password": PASSWORD})
                job = f"{JOBS // 2:012x}"
                paths = [
                    ("static file (floor)", "/static/console.css"),
                    ("login page", "/login"),
                    ("overview", "/"),
                    ("overview, live part", "/live/overview"),
                    ("sites, page 1", "/sites"),
                    ("sites, page 100", "/sites?page=100"),
                    ("sites, filtered", "/sites?tag=region%3Dnorth&kind=hospital"),
                    ("site", "/sites/site-05000"),
                    ("training, page 1", "/training"),
                    ("training job", f"/training/{job}"),
                    ("training job, chart data", f"/training/{job}/rounds.json"),
                    ("models", "/models"),
                    ("exchange", "/exchange"),
                    ("analytics", "/analytics"),
                    ("audit", "/audit"),
                    ("audit, filtered", "/audit?action=site.add&site=site-00042"),
                ]
                results = {name: measure(client, path, repeats) for name, path in paths}
        finally:
            coordinator.stop(0)
    floor = median(results["static file (floor)"])
    rows, figures = (
        [],
        {"sites": SITES, "jobs": JOBS, "audit_entries": SITES, "repeats": repeats, "setup_s": round(setup_s, 1)},
    )
    worst = 0.0
    for name, times in results.items():
        p50, p95, p99 = median(times), percentile(times, 95), percentile(times, 99)
        worst = max(worst, p95) if name != "static file (floor)" else worst
        rows.append(
            (
                name,
                f"{p50 * 1000:7.1f} / {p95 * 1000:7.1f} / {p99 * 1000:7.1f} ms",
                f"p50 {p50 / floor:5.1f}x the floor",
            )
        )
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        figures[f"{key}_p50_ms"] = round(p50 * 1000, 2)
        figures[f"{key}_p95_ms"] = round(p95 * 1000, 2)
        figures[f"{key}_p99_ms"] = round(p99 * 1000, 2)
        figures[f"{key}_p50_vs_floor"] = round(p50 / floor, 1)
    figures["worst_page_p95_ms"] = round(worst * 1000, 1)
    figures["target_p95_ms"] = TARGET_P95_S * 1000
    figures["target_met"] = worst < TARGET_P95_S
    rows.append(
        (
            "worst page p95",
            f"{worst * 1000:.1f} ms",
            f"target < {TARGET_P95_S * 1000:.0f} ms: {'met' if worst < TARGET_P95_S else 'MISSED'}",
        )
    )
    report(
        f"Console latency, p50 / p95 / p99, {SITES:,} sites, {JOBS:,} jobs, {SITES:,} audit entries "
        f"({repeats} requests each)",
        rows,
        figures,
    )


if __name__ == "__main__":
    main()
