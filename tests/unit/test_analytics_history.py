"""The query history store (a real SQLite file): retention by count and age, bounded
entries, filters, outcomes, and a write failure that never fails the query."""

from __future__ import annotations

import json

import pytest

from cloud_coordinator.analytics import history as history_mod
from cloud_coordinator.analytics.history import HistoryFilter, QueryHistory, QueryHistoryStore
from cloud_coordinator.sites import selector
from silolink import errors
from silolink.analytics.query import build_query
from silolink.db import Migrations, open_database
from tests.unit.test_site_service import Clock


@pytest.fixture
def made(tmp_path):
    db = open_database(tmp_path / "coordinator.db")
    clock = Clock()
    yield QueryHistoryStore(db), clock
    db.close()


def keep(history: QueryHistory, query_id: str, sites=("a-1", "b-2"), **kw) -> None:
    history.keep(
        query_id=query_id,
        asked_by=kw.pop("asked_by", "operator:admin"),
        asked_at=history.clock(),
        query=kw.pop("query", build_query("patients", "count")),
        selectors=kw.pop("selectors", [selector.parse("kind=hospital")]),
        sites=list(sites),
        failures=kw.pop("failures", {}),
        **kw,
    )


def ids(history: QueryHistory, **filters) -> list[str]:
    return [e.query_id for e in history.find(HistoryFilter(**filters), 1000)[0]]


def test_retention_keeps_the_newest_entries_and_drops_old_ones(made):
    store, clock = made
    history = QueryHistory(store, max_entries=5, max_age_s=3600, clock=clock)
    for i in range(8):
        keep(history, f"q{i}", totals={"count": i})
        clock.now += 60
    assert ids(history) == ["q7", "q6", "q5", "q4", "q3"] and store.count() == 5
    clock.now += 3600 - 4 * 60  # q3 (and only q3) is now older than an hour
    keep(history, "q8")
    assert ids(history) == ["q8", "q7", "q6", "q5", "q4"]
    clock.now += 2 * 3600
    keep(history, "q9")
    assert ids(history) == ["q9"]


def test_outcomes_from_what_the_sites_answered(made):
    store, clock = made
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    keep(history, "ok", totals={"count": 42, "sum": 1.5}, noise={"a-1": 0.5, "b-2": 0.0})
    keep(
        history,
        "no",
        failures={"a-1": errors.FailedPrecondition("cohort below minimum"), "b-2": errors.Unavailable("gone")},
        error=errors.FailedPrecondition("site a-1 refused the query"),
    )
    keep(history, "gone", failures={"b-2": errors.DeadlineExceeded("late")}, error=errors.Aborted("dropped out"))
    keep(history, "early", sites=(), error=errors.InvalidArgument("a query needs --dataset"))
    by_id = {e.query_id: e for e in history.find(HistoryFilter())[0]}
    assert by_id["ok"].outcome == "answered" and by_id["ok"].totals == {"count": 42, "sum": 1.5}
    assert by_id["ok"].noise == {"a-1": 0.5, "b-2": 0.0} and by_id["ok"].reason == ""
    assert by_id["no"].outcome == "refused" and [r.code for r in by_id["no"].refusals] == [
        "FAILED_PRECONDITION",
        "UNAVAILABLE",
    ]
    assert by_id["gone"].outcome == "failed" and by_id["gone"].refusals[0].site == "b-2"
    assert by_id["early"].outcome == "failed" and by_id["early"].reason == "a query needs --dataset"
    assert ids(history, outcome="refused") == ["no"]
    with pytest.raises(errors.InvalidArgument, match="outcome must be one of"):
        ids(history, outcome="maybe")


def test_an_entry_stays_bounded_however_large_the_query(made):
    store, clock = made
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    sites = [f"site-{i:05}" for i in range(10_000)]
    query = build_query("patients", "count")
    query.where = "x" * 100_000  # refused by the grammar, kept cut short
    keep(
        history,
        "huge",
        sites=sites,
        query=query,
        selectors=[selector.parse(f"site-{i:05}") for i in range(500)],
        failures={s: errors.FailedPrecondition("r" * 10_000) for s in sites},
        error=errors.FailedPrecondition("everyone refused"),
    )
    (entry,), total, _ = history.find(HistoryFilter(site="site-09999"))
    assert total == 1 and len(entry.sites) == 10_000
    assert len(entry.refusals) == history_mod.MAX_KEPT_REFUSALS and entry.refusal_count == 10_000
    assert all(len(r.reason) == history_mod.MAX_REASON_CHARS for r in entry.refusals)
    assert len(entry.selectors) == history_mod.MAX_KEPT_SELECTORS
    assert len(entry.query.where) == history_mod.MAX_TEXT_CHARS


def test_filters_match_exact_names_and_accounts(made):
    store, clock = made
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    keep(history, "q1", sites=("a-1", "a-10"), asked_by="operator:olga")
    keep(history, "q2", sites=("a-10",), query=build_query("scans", "count"))
    assert ids(history, site="a-1") == ["q1"] and ids(history, site="a-10") == ["q2", "q1"]
    assert ids(history, site="a") == [] and ids(history, site='a-1", "a-10') == []
    assert ids(history, asked_by="olga") == ids(history, asked_by="operator:olga") == ["q1"]
    assert ids(history, dataset="scans") == ["q2"] and ids(history, query_id="q1") == ["q1"]


def test_a_failed_write_is_logged_and_the_query_goes_on(made, caplog):
    store, clock = made
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    store.db.execute("DROP TABLE query_history")
    keep(history, "lost", totals={"count": 3})  # no exception
    assert "writing it to the query history failed" in caplog.text


def index_rows(store: QueryHistoryStore, site: str) -> set[int]:
    """The entries (seq) the sites index itself gives for ``site``: what the filter relies on."""
    found = store.db.execute(
        f"SELECT rowid FROM {history_mod.SITES_INDEX} WHERE {history_mod.SITES_INDEX} MATCH ?",  # noqa: S608
        [f'"{site}"'],
    )
    return {row[0] for row in found}


def seqs(store: QueryHistoryStore, site: str) -> set[int]:
    """The entries (seq) whose list of sites names ``site``, read from the JSON itself."""
    rows = store.db.execute("SELECT seq, sites FROM query_history").fetchall()
    return {seq for seq, sites in rows if site in json.loads(sites)}


def test_the_site_filter_is_exact_for_names_inside_other_names(made):
    store, clock = made
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    keep(history, "q1", sites=("hospital-a", "site-10", "site-100"))
    keep(history, "q2", sites=("a", "site-1"))
    keep(history, "q3", sites=("b", "hospital-a-2", "site-1-0"))
    expected = {
        "a": ["q2"],
        "hospital-a": ["q1"],
        "hospital": [],
        "hospital-a-2": ["q3"],
        "site-1": ["q2"],
        "site-10": ["q1"],
        "site-1-0": ["q3"],
        "site": [],
        "1": [],
        "Site-1": [],  # names are lowercase; the index folds case, the check does not
        "-": [],
        "site-1*": [],  # not FTS syntax: checked row by row
        'site-1" OR "a': [],
        "a b": [],
    }
    for site, want in expected.items():
        assert ids(history, site=site) == want, site
        entries, total, _ = history.find(HistoryFilter(site=site))
        assert total == len(want), site
    assert ids(history, site="site-1", outcome="answered") == ["q2"]
    assert ids(history, site="site-1", outcome="refused") == []


def test_the_site_filter_is_used_by_the_count_and_the_pages(made):
    store, clock = made
    history = QueryHistory(store, max_entries=1000, max_age_s=3600, clock=clock)
    for i in range(120):
        keep(history, f"q{i:03}", sites=(f"site-{i % 3}", f"site-{i % 3}0"))
    found, total, token = history.find(HistoryFilter(site="site-1"), 25)
    assert total == 40 and [e.query_id for e in found] == [f"q{i:03}" for i in range(118, 43, -3)]
    pages = [e.query_id for e in found]
    while token:
        found, total, token = history.find(HistoryFilter(site="site-1"), 25, token)
        pages += [e.query_id for e in found]
    assert pages == [f"q{i:03}" for i in range(118, -1, -3)] and total == 40
    # The plan reads the index, not every entry's list of sites.
    where, params = HistoryFilter(site="site-1", outcome="answered").where()
    plan = [
        row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM query_history{where}", params)
    ]
    assert "SEARCH query_history USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    assert any(step.startswith(f"SCAN {history_mod.SITES_INDEX} VIRTUAL TABLE") for step in plan), plan
    assert not any(step.startswith("SCAN query_history ") or step == "SCAN query_history" for step in plan), plan


def test_the_sites_index_follows_inserts_and_retention_deletes(made):
    store, clock = made
    history = QueryHistory(store, max_entries=4, max_age_s=3600, clock=clock)
    for i in range(10):
        keep(history, f"q{i}", sites=(f"site-{i % 3}", "site-all"))
        clock.now += 60
        for site in ("site-0", "site-1", "site-2", "site-all", "site-9"):
            assert index_rows(store, site) == seqs(store, site), (i, site)
    assert store.count() == 4 and len(index_rows(store, "site-all")) == 4
    assert ids(history, site="site-0") == ["q9", "q6"]
    clock.now += 2 * 3600  # everything kept is now too old: the age limit deletes it
    keep(history, "last", sites=("site-5",))
    assert index_rows(store, "site-all") == set() and ids(history, site="site-all") == []
    assert ids(history, site="site-5") == ["last"] and index_rows(store, "site-5") == seqs(store, "site-5")
    # FTS5's own check: the index holds exactly what the table's rows say.
    store.db.execute(
        f"INSERT INTO {history_mod.SITES_INDEX}({history_mod.SITES_INDEX}, rank) VALUES ('integrity-check', 1)"
    )


def test_the_migration_indexes_entries_kept_before_it(tmp_path):
    """A database at m001 (the history without the index) with entries in it: opening the
    store applies m002, which indexes those entries; new ones are indexed as they come."""
    db = open_database(tmp_path / "coordinator.db")
    at_m001 = Migrations(history_mod.migrations.name)
    at_m001()(history_mod.m001_query_history)

    class StoreAtM001(QueryHistoryStore):
        migrations = at_m001

    clock = Clock()
    old = QueryHistory(StoreAtM001(db), max_entries=100, max_age_s=3600, clock=clock)
    keep(old, "before-1", sites=("site-1", "site-10"))
    keep(old, "before-2", sites=("site-10",))
    assert history_mod.SITES_INDEX not in db.table_names()
    db.close()

    db = open_database(tmp_path / "coordinator.db")
    store = QueryHistoryStore(db)
    assert [m.name for m in history_mod.migrations.applied(db)] == [
        "m001_query_history",
        "m002_query_history_sites_index",
    ]
    history = QueryHistory(store, max_entries=100, max_age_s=3600, clock=clock)
    keep(history, "after", sites=("site-1",))
    assert index_rows(store, "site-10") == seqs(store, "site-10") and len(seqs(store, "site-10")) == 2
    assert ids(history, site="site-1") == ["after", "before-1"] and ids(history, site="site-10") == [
        "before-2",
        "before-1",
    ]
    store.db.execute(
        f"INSERT INTO {history_mod.SITES_INDEX}({history_mod.SITES_INDEX}, rank) VALUES ('integrity-check', 1)"
    )
    db.close()
