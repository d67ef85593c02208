"""The coordinator's query history over real agents and real mTLS: totals kept for answered
queries, the sites that refused and why, who asked, filters and pages on the server, the
viewer role, and the CLI."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from click.testing import CliRunner

from cloud_coordinator.analytics.client import AnalyticsClient
from cloud_coordinator.cli import main
from silolink import errors
from silolink.config import AnalyticsConfig
from tests import support
from tests.integration.test_accounts import new_account
from tests.integration.test_analytics import rows_of, write_patients

SIZES = {"hospital-a": 60, "hospital-b": 45, "hospital-c": 30}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three hospitals (hospital-c refuses filters that leave fewer than 12 of its rows), a
    factory that is offline, an operator olga and a viewer vera; the queries below run once
    and every test reads the history they left."""
    tmp = tmp_path_factory.mktemp("history")
    coordinator = support.start_coordinator(tmp / "coordinator")
    agents = {}
    for seed, (name, n) in enumerate(SIZES.items()):
        support.enroll_site(coordinator, name, tmp / name, "hospital")
        cohort = 12 if name == "hospital-c" else 10
        agent = support.start_agent(tmp / name, analytics=AnalyticsConfig(min_cohort=cohort))
        agent.catalog.import_csv(write_patients(tmp / f"{name}.csv", name, n, seed), "patients")
        agents[name] = agent
    support.enroll_site(coordinator, "factory-a", tmp / "factory-a", "factory")  # enrolled, never connects
    admin = support.operator(coordinator)
    olga = new_account(admin, coordinator, tmp, "olga", "operator")
    vera = new_account(admin, coordinator, tmp, "vera", "viewer")
    for agent in agents.values():
        assert agent.wait_connected(10)
    asked = {}
    ask = AnalyticsClient(admin)
    asked["count"] = ask.run_query("patients", "count", ["kind=hospital"])
    asked["mean"] = ask.run_query("patients", "mean radius", ["region=none", "kind=hospital"], where="age >= 30")
    asked["histogram"] = AnalyticsClient(olga).run_query(
        "patients", "histogram age --bins 0,50,100", ["hospital-a", "hospital-b"]
    )
    refusals = {
        # Few rows over 85 anywhere: all three refuse (hospital-c under its minimum of 12).
        "cohort": ("count", ["kind=hospital"], {"where": "age > 85"}),
        # A column no site has: each site says so.
        "column": ("mean weight", ["hospital-a", "hospital-b"], {}),
        # One site only: refused by the coordinator before any site is asked.
        "one-site": ("count", ["hospital-a"], {}),
        # The factory is enrolled but offline.
        "offline": ("count", ["hospital-a", "factory-a"], {}),
    }
    for key, (statistic, sites, kw) in refusals.items():
        with pytest.raises(errors.SiloError) as failed:
            ask.run_query("patients", statistic, sites, **kw)
        asked[key] = failed.value
    yield coordinator, agents, admin, olga, vera, asked
    for client in (vera, olga, admin):
        client.close()
    for agent in agents.values():
        agent.stop(0)
    coordinator.stop(0)


def history(client, **filters):
    return AnalyticsClient(client).history(**filters)["queries"]


def test_answered_queries_keep_their_totals_and_who_asked(world):
    coordinator, agents, admin, _, _, asked = world
    pooled = [r for a in agents.values() for r in rows_of(a)]
    entries = {q["query_id"]: q for q in history(admin)}
    count = entries[asked["count"]["query_id"]]
    assert count["outcome"] == "answered" and count["result"] == {"count": len(pooled)} == {
        "count": asked["count"]["count"]
    }
    assert count["asked_by"] == "operator:admin" and count["selectors"] == ["kind=hospital"]
    assert count["sites"] == sorted(SIZES) and count["refusals"] == [] and count["reason"] is None
    assert count["noise"] == dict.fromkeys(SIZES, 0.0)
    assert count["asked_at"] <= count["finished_at"]

    mean = entries[asked["mean"]["query_id"]]
    chosen = [r[1] for r in pooled if r[0] >= 30]
    assert mean["result"]["count"] == len(chosen)
    assert mean["result"]["mean"] == pytest.approx(math.fsum(chosen) / len(chosen), abs=1e-4)
    assert (mean["statistic"], mean["column"], mean["where"]) == ("mean", "radius", "age >= 30")
    assert mean["selectors"] == ["region=none", "kind=hospital"]

    histogram = entries[asked["histogram"]["query_id"]]
    two = [r[0] for name in ("hospital-a", "hospital-b") for r in rows_of(agents[name])]
    assert histogram["asked_by"] == "operator:olga" and histogram["sites"] == ["hospital-a", "hospital-b"]
    assert histogram["result"]["histogram"] == {
        "edges": [0, 50, 100],
        "counts": [sum(1 for a in two if a < 50), sum(1 for a in two if a >= 50)],
        "below": 0,
        "above": 0,
    }


def test_refused_and_failed_queries_name_the_sites_and_why(world):
    _, _, admin, _, _, asked = world
    by_reason = {q["reason"]: q for q in history(admin) if q["outcome"] != "answered"}

    cohort = by_reason[asked["cohort"].message]
    assert cohort["outcome"] == "refused" and cohort["result"] == {}
    assert [r["site"] for r in cohort["refusals"]] == sorted(SIZES) and cohort["refusal_count"] == 3
    assert {r["code"] for r in cohort["refusals"]} == {"FAILED_PRECONDITION"}
    c = next(r for r in cohort["refusals"] if r["site"] == "hospital-c")
    assert "minimum cohort of 12" in c["reason"]  # the site's own words: its minimum, never its count

    column = by_reason[asked["column"].message]
    assert column["outcome"] == "refused" and {r["code"] for r in column["refusals"]} == {"INVALID_ARGUMENT"}
    assert all("has no column 'weight'" in r["reason"] for r in column["refusals"])

    one = by_reason[asked["one-site"].message]
    assert one["outcome"] == "failed" and one["sites"] == [] and one["refusals"] == []
    assert "at least 2" in one["reason"]

    offline = by_reason[asked["offline"].message]
    assert offline["outcome"] == "failed" and offline["sites"] == ["factory-a", "hospital-a"]
    assert offline["refusals"] == [
        {"site": "factory-a", "code": "UNAVAILABLE", "reason": "not connected when the query was asked"}
    ]


def test_filters_and_pages_are_served_by_the_coordinator(world):
    _, _, admin, _, vera, asked = world
    everything = history(admin)
    assert len(everything) == 7
    # Newest first.
    assert [q["query_id"] for q in everything][-1] == asked["count"]["query_id"]

    assert [q["query_id"] for q in history(admin, asked_by="olga")] == [asked["histogram"]["query_id"]]
    assert history(admin, asked_by="operator:olga") == history(admin, asked_by="olga")
    assert len(history(admin, outcome="answered")) == 3 and len(history(admin, outcome="refused")) == 2
    assert len(history(admin, outcome="failed")) == 2
    # A site filter is an exact name (hospital-a is not part of another name's match).
    assert len(history(admin, site="hospital-c")) == 3
    assert len(history(admin, site="hospital")) == 0
    assert len(history(admin, site="factory-a")) == 1
    assert len(history(admin, dataset="patients")) == 7 and history(admin, dataset="other") == []
    only = history(admin, query_id=asked["mean"]["query_id"])
    assert [q["query_id"] for q in only] == [asked["mean"]["query_id"]]

    pages, token = [], ""
    while True:
        page = AnalyticsClient(admin).history(3, token)
        assert page["total"] == 7
        pages.append([q["query_id"] for q in page["queries"]])
        token = page["next_page_token"]
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sum(pages, []) == [q["query_id"] for q in everything]

    with pytest.raises(errors.InvalidArgument, match="page token"):
        AnalyticsClient(admin).history(3, "not-a-token")
    with pytest.raises(errors.InvalidArgument, match="outcome must be"):
        AnalyticsClient(admin).history(outcome="maybe")

    # A viewer reads the history but may not ask.
    assert len(history(vera)) == 7
    with pytest.raises(errors.PermissionDenied, match="vera has the viewer role; RunQuery needs the operator role"):
        AnalyticsClient(vera).run_query("patients", "count", ["kind=hospital"])


def test_the_database_keeps_totals_only(world):
    """What is on disk for each query: the query, the sites, the totals across them (the
    operator's answer), the sites' reasons; no column that could hold a site's own value."""
    coordinator = world[0]
    conn = sqlite3.connect(coordinator.layout.database)
    try:
        rows = conn.execute("SELECT outcome, totals FROM query_history").fetchall()
    finally:
        conn.close()
    for outcome, totals in rows:
        kept = json.loads(totals)
        assert set(kept) <= {"count", "sum", "mean", "bin_counts", "below", "above"}
        assert outcome == "answered" or kept == {}


def test_query_history_on_the_command_line(world):
    coordinator, _, _, _, _, asked = world
    base = ["query", "history", "--data-dir", str(coordinator.layout.root)]
    runner = CliRunner()
    done = runner.invoke(main, [*base, "--json", "--by", "olga"])
    assert done.exit_code == 0, done.output
    page = json.loads(done.output)
    assert [q["query_id"] for q in page["queries"]] == [asked["histogram"]["query_id"]] and page["total"] == 1

    done = runner.invoke(main, [*base, "--limit", "2"])
    assert done.exit_code == 0, done.output
    assert "2 of 7 matching queries; more with --page-token 2" in done.output
    done = runner.invoke(main, [*base, "--outcome", "refused"])
    assert done.exit_code == 0, done.output
    assert "refused by hospital-a, hospital-b" in done.output and "has no column 'weight'" in done.output
    done = runner.invoke(main, [*base, "--outcome", "answered", "--site", "hospital-c"])
    assert "count 135" in done.output and "mean radius where age >= 30" in done.output
    done = runner.invoke(main, [*base, "--page-token", "x"])
    assert done.exit_code == 2 and done.output.startswith("error: the page token is not one this server gave out")
