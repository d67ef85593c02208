"""Federated queries across real agents: correct totals, refusals, no per-site value at the coordinator."""

from __future__ import annotations

import math
import random
import sqlite3

import pytest

from cloud_coordinator.analytics.client import AnalyticsClient
from silolink import errors
from tests import support

COLUMNS = "patient_id,age,radius,sex,diagnosis,note"


def write_patients(path, site: str, n: int, seed: int, extra: list[str] | None = None):
    rng = random.Random(seed)
    lines = [COLUMNS]
    for i in range(n):
        age = rng.randint(20, 90)
        radius = round(rng.uniform(6.0, 28.0), 4)
        lines.append(f"{site}-{i},{age},{radius},{rng.choice('FM')},{rng.randint(0, 1)},ok")
    lines += extra or []
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(agent):
    conn = sqlite3.connect(agent.layout.catalog_db)
    try:
        return conn.execute("SELECT age, radius, sex, diagnosis FROM patients").fetchall()
    finally:
        conn.close()


@pytest.fixture
def hospitals(coordinator, make_agent, tmp_path):
    agents = {}
    for name, n, seed in (("hospital-a", 60, 1), ("hospital-b", 45, 2), ("hospital-c", 30, 3)):
        agent = make_agent(name)
        agent.catalog.import_csv(write_patients(tmp_path / f"{name}.csv", name, n, seed), "patients", label="diagnosis")
        agents[name] = agent
    return agents


def run(coordinator, *statistic, sites=("kind=hospital",), **kw):
    with support.operator(coordinator) as op:
        return AnalyticsClient(op).run_query("patients", " ".join(statistic), sites, **kw)


def test_totals_match_a_direct_computation(coordinator, hospitals):
    pooled = [r for a in hospitals.values() for r in rows_of(a)]
    assert run(coordinator, "count")["count"] == len(pooled)

    result = run(coordinator, "mean", "radius", where="diagnosis = 1 and (age >= 40 or sex = 'F')")
    chosen = [r[1] for r in pooled if r[3] == 1 and (r[0] >= 40 or r[2] == "F")]
    assert result["count"] == len(chosen)
    assert result["mean"] == pytest.approx(math.fsum(chosen) / len(chosen), abs=1e-4)
    assert result["sites"] == sorted(hospitals)

    ages = run(coordinator, "sum", "age", where="sex != 'F'")
    assert ages["sum"] == sum(r[0] for r in pooled if r[2] != "F")

    clipped = run(coordinator, "sum", "radius", clip="10:20")
    assert clipped["sum"] == pytest.approx(math.fsum(min(max(r[1], 10), 20) for r in pooled), abs=1e-3)

    histogram = run(coordinator, "histogram radius --bins 6,17,28")["histogram"]
    assert histogram["counts"] == [sum(1 for r in pooled if r[1] < 17), sum(1 for r in pooled if 17 <= r[1] <= 28)]
    assert histogram["below"] == histogram["above"] == 0 and histogram["edges"] == [6, 17, 28]

    # Selectors: one site by name plus a tag-less kind, repeated --sites are a union.
    two = run(coordinator, "count", sites=("hospital-a", "site=hospital-b"))
    assert two["sites"] == ["hospital-a", "hospital-b"]
    assert two["count"] == len(rows_of(hospitals["hospital-a"])) + len(rows_of(hospitals["hospital-b"]))


def test_refusals_are_clear_and_audited(coordinator, hospitals):
    with pytest.raises(
        errors.FailedPrecondition,
        match=r"refused the query, each: the query matches fewer rows here than this site's minimum cohort of 10",
    ):
        run(coordinator, "count", where="age > 85")
    with pytest.raises(
        errors.NotFound,
        match="hospital-c refused the query, each: this site has no dataset named 'nothing_here'",
    ):
        with support.operator(coordinator) as op:
            AnalyticsClient(op).run_query("nothing_here", "count", ["kind=hospital"])
    with pytest.raises(errors.InvalidArgument, match="has no column 'weight'"):
        run(coordinator, "mean", "weight")
    with pytest.raises(errors.InvalidArgument, match="numeric column; 'sex' holds text"):
        run(coordinator, "sum", "sex")
    with pytest.raises(errors.InvalidArgument, match="sex holds text; compare it with a quoted string"):
        run(coordinator, "count", where="sex = 1")
    with pytest.raises(errors.FailedPrecondition, match="at least 2"):
        run(coordinator, "count", sites=("hospital-a",))
    with pytest.raises(errors.FailedPrecondition, match="histogram bin"):
        run(coordinator, "histogram radius --bins 6,27.9,28")

    # SQL smuggled into the filter never reaches SQL: each is refused by the grammar or bound as a literal.
    for attack in (
        "age > 1; DROP TABLE patients",
        "age > 1 or 1=1",
        "sex = 'F' UNION SELECT sqlite_version()",
        "age > (SELECT 1)",
        "sex = ''; DELETE FROM patients; --'",
    ):
        with pytest.raises(errors.InvalidArgument):
            run(coordinator, "count", where=attack)
    quoted = run(coordinator, "count", where="sex != 'x'' OR ''1''=''1'")  # a literal, not SQL
    assert quoted["count"] == sum(len(rows_of(a)) for a in hospitals.values())
    assert all(len(rows_of(a)) > 0 for a in hospitals.values())

    entries = [e for e in coordinator.audit.entries() if e.action == "query.run"]
    outcomes = [e.details["outcome"] for e in entries]
    assert outcomes.count("ok") == 1 and outcomes.count("failed") == len(entries) - 1
    cohort = next(e for e in entries if "fewer rows" in (e.details.get("reason") or ""))
    assert cohort.actor.startswith("operator:") and cohort.details["sites"] == sorted(hospitals)
    assert cohort.details["dataset"] == "patients" and cohort.details["statistic"] == "count"
    assert coordinator.audit.verify()
    # Audit entries are written while heartbeats update sites on the same connection: one lock.
    assert coordinator.audit.lock is coordinator.db_lock


def test_policy_min_sites_and_noise(coordinator, make_agent, tmp_path):
    from silolink.config import AnalyticsConfig

    a = make_agent("hospital-a", analytics=AnalyticsConfig(epsilon=1.0))
    b = make_agent("hospital-b", analytics=AnalyticsConfig(datasets=("other",), min_sites=3))
    for name, agent in (("hospital-a", a), ("hospital-b", b)):
        agent.catalog.import_csv(write_patients(tmp_path / f"{name}.csv", name, 200, 5), "patients")
    with pytest.raises(errors.FailedPrecondition) as refused:
        run(coordinator, "count")
    assert "site hospital-b refused the query: this site takes part only in queries across at least 3 sites" in (
        refused.value.message
    )
    b.stop(0)
    b = support.start_agent(tmp_path / "hospital-b", analytics=AnalyticsConfig(datasets=("other",)))
    try:
        assert b.wait_connected(10)
        with pytest.raises(errors.PermissionDenied, match="does not allow queries on dataset 'patients'"):
            run(coordinator, "count")
    finally:
        b.stop(0)
    b = support.start_agent(tmp_path / "hospital-b")
    try:
        assert b.wait_connected(10)
        with pytest.raises(
            errors.FailedPrecondition, match="site hospital-a refused the query: this site adds noise .* --clip"
        ):
            run(coordinator, "mean", "age")
        truth = len(rows_of(a)) + len(rows_of(b))
        noisy = [run(coordinator, "count") for _ in range(12)]
        assert all(r["noise"] == {"hospital-a": 1.0, "hospital-b": 0.0} for r in noisy)
        # Discrete Laplace with scale 1: within 30 of the truth with overwhelming probability.
        assert all(abs(r["count"] - truth) <= 30 for r in noisy)
        # Each draw is exactly 0 with probability (1 - e^-1) / (1 + e^-1) = 0.46: all 12 with 1e-4.
        assert any(r["count"] != truth for r in noisy)
        mean = run(coordinator, "mean", "age", clip="0:120")
        assert 20 <= mean["mean"] <= 90
    finally:
        b.stop(0)
