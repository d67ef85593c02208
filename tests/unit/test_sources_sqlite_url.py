"""A SQL source over SQLAlchemy's SQLite driver (no server needed): the same interface,
read-only connections, and bound parameters."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is in the [sources] extra (pip install -e '.[dev]')")

from edge_agent.catalog.sources import add_source  # noqa: E402
from edge_agent.catalog.store import Catalog  # noqa: E402
from silolink import errors  # noqa: E402
from silolink.analytics import where as where_mod  # noqa: E402


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE readings (machine TEXT, temp REAL, faults INTEGER)")
        conn.executemany(
            "INSERT INTO readings VALUES (?, ?, ?)", [(f"m{i % 3}", 20 + i * 0.5, i % 4) for i in range(30)]
        )
    return path


def test_a_sqlite_database_reads_in_place_and_never_writes(tmp_path, warehouse):
    catalog = Catalog.open(tmp_path / "catalog.db")
    url = f"sqlite:///{warehouse}"
    dataset = add_source(catalog, "readings", url, table="readings", label="faults")
    assert [(c.name, c.type) for c in dataset.columns] == [("machine", "TEXT"), ("temp", "REAL"), ("faults", "INTEGER")]
    source = catalog.source("readings")
    assert source.count(where_mod.parse("machine = 'm1' and temp >= 25")) == sum(
        1 for i in range(30) if i % 3 == 1 and 20 + i * 0.5 >= 25
    )
    assert source.summarize("faults", where_mod.parse("machine != 'm0'")) == (
        20,
        sum(i % 4 for i in range(30) if i % 3),
    )
    rows, total = source.summarize("temp", bounds=(25.0, 30.0))
    assert rows == 30 and total == pytest.approx(sum(min(max(20 + i * 0.5, 25), 30) for i in range(30)))
    with pytest.raises(errors.InvalidArgument, match="single statement"):
        add_source(catalog, "bad", url, query="WITH x AS (SELECT 1) SELECT * FROM x; DELETE FROM readings")
    # The connections the source opens are query_only: SQLite itself refuses a write on them.
    import sqlalchemy as sa

    conn = source._connect()
    try:
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("DELETE FROM readings")
    finally:
        conn.close()
    with sqlite3.connect(warehouse) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 30
    assert [d.name for d in catalog.list()] == ["readings"]
