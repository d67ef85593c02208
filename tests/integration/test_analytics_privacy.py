"""What the coordinator learns from federated queries: totals only.

It never holds a site's own value (its masked vectors look random and only their sum means
anything), a site dropping out fails the query without a partial total, and no marker value
planted in the sites' data turns up in the coordinator's files, database or logs.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import struct
import threading
import uuid

import pytest

from cloud_coordinator.analytics.client import AnalyticsClient
from silolink import errors
from silolink.analytics.query import MODULUS, SCALE
from tests import support


def plant(agent, tmp_path, name: str, n: int, seed: int) -> dict:
    """A dataset with unique text markers and unusual numbers; returns what the site holds."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex
    rows = [(f"{name}-{i}", round(rng.uniform(1_000_000, 2_000_000), 6), f"MRK-{tag}-{i}") for i in range(n)]
    path = tmp_path / f"{name}-markers.csv"
    path.write_text("row_id,reading,note\n" + "".join(f"{r},{v},{m}\n" for r, v, m in rows))
    agent.catalog.import_csv(path, "readings", id_column="row_id")
    values = [v for _, v, _ in rows]
    return {"values": values, "notes": [m for *_, m in rows], "sum": math.fsum(values), "count": n}


def secrets_of(site: dict) -> list[bytes]:
    """Every form in which one of this site's own values could be written down."""
    out = [note.encode() for note in site["notes"]]
    numbers = [*site["values"], site["sum"], site["sum"] / site["count"]]
    for value in numbers:
        out += [repr(value).encode(), f"{value:.4f}".encode(), struct.pack("<d", value), struct.pack(">d", value)]
    fixed = round(site["sum"] * SCALE)
    for encoded in (fixed, fixed % MODULUS):
        out += [str(encoded).encode(), encoded.to_bytes(8, "little"), encoded.to_bytes(8, "big")]
    return out


def query(coordinator, statistic, sites=("kind=hospital",), **kw):
    with support.operator(coordinator) as op:
        return AnalyticsClient(op).run_query("readings", statistic, sites, **kw)


@pytest.fixture
def capture(coordinator):
    """Every command result the coordinator receives, as it receives it."""
    seen = []
    original = coordinator.hub.request

    def request(site, **body):
        future = original(site, **body)
        future.add_done_callback(lambda f: seen.append((site, f.result())) if not f.exception() else None)
        return future

    coordinator.hub.request = request
    return seen


def test_coordinator_sees_only_random_looking_vectors_that_sum_to_the_total(coordinator, make_agent, tmp_path, capture):
    sites = {}
    for name, n, seed in (("hospital-a", 40, 11), ("hospital-b", 25, 12)):
        sites[name] = plant(make_agent(name), tmp_path, name, n, seed)
    result = query(coordinator, "sum reading")
    assert result["sum"] == pytest.approx(sites["hospital-a"]["sum"] + sites["hospital-b"]["sum"], abs=1e-3)

    masked = {site: list(r.analytics_mask.masked) for site, r in capture if r.WhichOneof("body") == "analytics_mask"}
    assert sorted(masked) == ["hospital-a", "hospital-b"]
    for site, vector in masked.items():
        own = round(sites[site]["sum"] * SCALE) % MODULUS
        # The masked value is nowhere near the site's own (a chance of about 2^-40 otherwise).
        assert abs(vector[0] - own) > 1 << 24
    assert (masked["hospital-a"][0] + masked["hospital-b"][0]) % MODULUS == round(result["sum"] * SCALE) % MODULUS
    setups = [r.analytics_setup for _, r in capture if r.WhichOneof("body") == "analytics_setup"]
    assert len(setups) == 2 and all(len(s.public_key) == 32 and s.vector_length == 1 for s in setups)


def test_a_site_dropping_out_between_rounds_fails_the_query_naming_it(coordinator, make_agent, tmp_path, capture):
    agents = {name: make_agent(name) for name in ("hospital-a", "hospital-b", "hospital-c")}
    for i, (name, agent) in enumerate(agents.items()):
        plant(agent, tmp_path, name, 20, i)
    dropping = agents["hospital-b"]

    def drop_out(command):
        threading.Thread(target=dropping.stop, args=(0,)).start()
        support.wait_for(lambda: not coordinator.hub.is_connected("hospital-b"), 10, "hospital-b gone")
        raise errors.Unavailable("gone")

    dropping.dispatcher.register("analytics_mask", drop_out)
    with pytest.raises(errors.Aborted) as failed:
        query(coordinator, "mean reading")
    message = failed.value.message
    assert message == (
        "site hospital-b dropped out in round 2 (disconnected or no answer in time), so no total was formed; "
        "run the query again when it is back"
    )
    assert "hospital-a" not in message and "hospital-c" not in message
    entry = coordinator.audit.entries()[-1]
    assert entry.action == "query.run" and entry.details["outcome"] == "failed"
    assert "hospital-b" in entry.details["reason"] and "sum" not in entry.details
    # The others did answer round 2, but their masks involve hospital-b's and never cancel.
    assert {site for site, r in capture if r.WhichOneof("body") == "analytics_mask"} == {"hospital-a", "hospital-c"}

    # A site offline before the query starts: refused at once, naming it.
    with pytest.raises(errors.FailedPrecondition, match="hospital-b are not connected"):
        query(coordinator, "count")


def test_no_marker_from_the_sites_reaches_the_coordinators_files_database_or_logs(
    coordinator, make_agent, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    agents = {name: make_agent(name) for name in ("hospital-a", "hospital-b")}
    sites = {name: plant(agent, tmp_path, name, 30 + 7 * i, 40 + i) for i, (name, agent) in enumerate(agents.items())}

    # Every analytics flow, including refusals.
    assert query(coordinator, "count")["count"] == 67
    query(coordinator, "sum reading")
    query(coordinator, "mean reading", where="reading > 1000 and note != 'none'")
    query(coordinator, "histogram reading", bins="1000000,1500000,2000000")
    query(coordinator, "sum reading", clip="0:3000000")
    for refused in (
        dict(statistic="count", where="reading < 1000001"),  # cohort too small
        dict(statistic="mean nowhere"),
        dict(statistic="count", where="note = 1"),
        dict(statistic="count", where="reading > 1; DROP TABLE readings"),
    ):
        with pytest.raises(errors.SiloError):
            query(coordinator, **refused)
    with support.operator(coordinator) as op:
        op.list_site_datasets("hospital-a")

    coordinator.stop(0)  # closes the database: everything is on disk now
    files = [p for p in coordinator.layout.root.rglob("*") if p.is_file()]
    assert any(p.name == "coordinator.db" for p in files)
    blobs = {p: p.read_bytes() for p in files}
    assert any(b"query.run" in blob for blob in blobs.values())  # the audit log is there to search
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert b"query " in logs
    for name, site in sites.items():
        for secret in secrets_of(site):
            for path, blob in blobs.items():
                assert secret not in blob, f"a value of {name} appears in {path}"
            assert secret not in logs, f"a value of {name} appears in the logs"

    # The markers are really there, at the sites (so the search above could have found them).
    for name, agent in agents.items():
        conn = sqlite3.connect(agent.layout.catalog_db)
        notes = [n for (n,) in conn.execute("SELECT note FROM readings")]
        conn.close()
        assert notes == sites[name]["notes"]
