"""SQL databases read in place: a real PostgreSQL server (started by the tests on a unix
socket), read-only, credentials kept out of the catalog, filters as bound parameters,
and clear errors when the database refuses, goes away, or the query would write."""

from __future__ import annotations

import json
import logging
import math
import random

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is in the [sources] extra (pip install -e '.[dev]')")

from cloud_coordinator.analytics.client import AnalyticsClient  # noqa: E402
from edge_agent.analytics.compute import compute  # noqa: E402
from edge_agent.catalog.sources import add_source  # noqa: E402
from edge_agent.catalog.store import Catalog  # noqa: E402
from silolink import errors  # noqa: E402
from silolink.analytics import where as where_mod  # noqa: E402
from silolink.analytics.query import build_query, decode_totals, to_ring  # noqa: E402
from tests import support  # noqa: E402

PASSWORD = "s3cret-Reader-pw"
ROWS = 3000


def patient_rows(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        bmi = None if i % 97 == 0 else round(rng.uniform(17, 40), 3)
        rows.append((f"p{i}", rng.randint(20, 90), bmi, rng.choice(["north", "south", None]), rng.randint(0, 1)))
    return rows


@pytest.fixture(scope="module")
def clinic(postgres):
    """A database ``clinic`` with a patients table, a view, a sequence and a reading role."""
    postgres.execute("DROP DATABASE IF EXISTS clinic")
    postgres.execute("CREATE DATABASE clinic")
    with postgres.connect("clinic") as conn:
        conn.execute(
            "CREATE TABLE patients (id text PRIMARY KEY, age integer, bmi double precision, ward text, outcome integer)"
        )
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO patients VALUES (%s, %s, %s, %s, %s)", patient_rows(ROWS, 1))
        conn.execute("CREATE VIEW adults AS SELECT id, age, bmi, outcome FROM patients WHERE age >= 40")
        conn.execute("CREATE SEQUENCE tickets")
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
        conn.execute("GRANT USAGE, UPDATE ON SEQUENCE tickets TO reader")
    return postgres


@pytest.fixture
def reader_url(clinic, monkeypatch):
    monkeypatch.setenv("CLINIC_DB_PASSWORD", PASSWORD)
    return clinic.url("clinic", user="reader", password="${CLINIC_DB_PASSWORD}")


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(tmp_path / "catalog.db")


def answer(source, text: str, where: str = "", clip: str | None = None) -> dict:
    query = build_query(source.dataset.name, text, where=where, clip=clip)
    return decode_totals(query, to_ring(compute(source, query, show_columns=True).values))


def test_a_table_reads_in_place_and_answers_like_the_same_rows_imported(catalog, reader_url, tmp_path):
    dataset = add_source(catalog, "clinic", reader_url, table="patients", label="outcome", id_column="id")
    assert dataset.kind == "sql" and dataset.row_count == ROWS
    assert [(c.name, c.type) for c in dataset.columns] == [
        ("id", "TEXT"), ("age", "INTEGER"), ("bmi", "REAL"), ("ward", "TEXT"), ("outcome", "INTEGER"),
    ]  # fmt: skip
    csv = tmp_path / "same.csv"
    csv.write_text(
        "id,age,bmi,ward,outcome\n"
        + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in patient_rows(ROWS, 1))
    )
    catalog.import_csv(csv, "imported", label="outcome", id_column="id")
    sql, table = catalog.source("clinic"), catalog.source("imported")
    for text, where, clip in [
        ("count", "", None),
        ("count", "age >= 50 and ward = 'north'", None),
        ("sum age", "outcome = 1 or ward != 'south'", None),
        ("mean bmi", "age < 40", None),
        ("mean age", "", "30:60"),
        ("histogram bmi --bins 15:40:5", "outcome = 0", None),
    ]:
        got, want = answer(sql, text, where, clip), answer(table, text, where, clip)
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-4), (text, where, key)
    # A literal is a bound parameter: text that would break string-built SQL matches nothing.
    assert sql.count(where_mod.parse("ward = 'north'' OR ''1''=''1'")) == 0
    batches = list(sql.scan(["rowid", "id", "bmi"], batch_rows=500))
    assert [len(b["id"]) for b in batches] == [500] * 6 and batches[0]["rowid"][0] == 1
    assert math.isnan(batches[0]["bmi"][0])  # p0 has no bmi


def test_views_and_selects_are_sources_too(catalog, reader_url):
    assert add_source(catalog, "adults", reader_url, table="public.adults").row_count == sum(
        1 for r in patient_rows(ROWS, 1) if r[1] >= 40
    )
    query = "SELECT age, outcome, bmi * 2 AS double_bmi FROM patients WHERE ward = 'north'"
    dataset = add_source(catalog, "north", reader_url, query=query, label="outcome")
    assert [(c.name, c.type) for c in dataset.columns] == [("age", "INTEGER"), ("outcome", "INTEGER"),
                                                           ("double_bmi", "REAL")]  # fmt: skip
    rows, total = catalog.source("north").summarize("age", where_mod.parse("outcome = 1"))
    expected = [r[1] for r in patient_rows(ROWS, 1) if r[3] == "north" and r[4] == 1]
    assert (rows, total) == (len(expected), sum(expected))


def test_credentials_never_reach_the_catalog_listing_or_logs(catalog, clinic, reader_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.InvalidArgument, match=r"holds a password.*\$\{NAME\}"):
        add_source(catalog, "leaky", clinic.url("clinic", user="reader", password=PASSWORD), table="patients")
    dataset = add_source(catalog, "clinic", reader_url, table="patients", sensitive=["ward"])
    assert "${CLINIC_DB_PASSWORD}" in dataset.location and "***" in dataset.source
    stored = json.dumps([dict(r) for r in catalog.db["_silolink_datasets"].rows])
    everything = [stored, json.dumps(dataset.to_dict()), json.dumps(catalog.summary("count")), caplog.text]
    assert not any(PASSWORD in text for text in everything)
    assert "ward" not in json.dumps(catalog.summary("count"))
    # The secret may also come from DATA_DIR/secrets/NAME instead of the environment.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("CLINIC_DB_PASSWORD")
        with pytest.raises(errors.FailedPrecondition, match=r"dataset 'clinic': a secret its database URL") as e:
            catalog.source("clinic").count()
        assert "${CLINIC_DB_PASSWORD} is neither set" in e.value.site_detail and "CLINIC" not in e.value.message
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "CLINIC_DB_PASSWORD").write_text(PASSWORD + "\n")
        assert catalog.source("clinic").count() == ROWS
    wrong = clinic.url("clinic", user="reader", password="${WRONG_PASSWORD}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WRONG_PASSWORD", "not-it")
        with pytest.raises(errors.FailedPrecondition, match=r"^dataset 'wrong': cannot connect to its database; ") as e:
            add_source(catalog, "wrong", wrong, table="patients")
        assert "not-it" not in str(e.value) and "not-it" not in e.value.site_detail
        # The site admin sees the masked URL and the driver's words; the message names neither.
        assert "password authentication failed" in e.value.site_detail and "reader:***@" in e.value.site_detail
        assert "reader" not in e.value.message and str(clinic.socket_dir) not in e.value.message


def test_dialects_without_a_read_only_session_are_refused_unless_the_site_allows_them(catalog, tmp_path):
    # SQL Server has no session-level read-only mode: refused before any driver is loaded.
    url = "mssql+pyodbc://reader:${MSSQL_PASSWORD}@db.example.org/omop?driver=ODBC+Driver+18+for+SQL+Server"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MSSQL_PASSWORD", "pw")
        for dialect_url in (url, "oracle+oracledb://reader:${MSSQL_PASSWORD}@db.example.org/omop"):
            with pytest.raises(errors.FailedPrecondition, match=r"cannot make a '(mssql|oracle)' database session "
                               r"read-only.*sql_without_read_only = \["):  # fmt: skip
                add_source(catalog, "omop", dialect_url, table="person")
        (tmp_path / "agent.toml").write_text('[catalog]\nsql_without_read_only = ["mssql"]\n')
        # Allowed: past the read-only gate, on to the driver (not installed here).
        with pytest.raises(errors.FailedPrecondition, match=r"cannot use its 'mssql' database.*install") as e:
            add_source(catalog, "omop", url, table="person")
        assert "db.example.org" not in e.value.message and "db.example.org" in e.value.site_detail
        (tmp_path / "agent.toml").write_text('[catalog]\nsql_without_read_only = ["MS SQL"]\n')
        with pytest.raises(errors.InvalidArgument, match="a SQLAlchemy dialect name"):
            add_source(catalog, "omop", url, table="person")
    assert catalog.list() == []


def test_a_select_that_writes_is_refused_and_nothing_is_registered(catalog, clinic, reader_url):
    for query in (
        "WITH gone AS (DELETE FROM patients RETURNING *) SELECT * FROM gone",
        "SELECT nextval('tickets') AS ticket",
    ):
        with pytest.raises(errors.FailedPrecondition, match=r"dataset 'bad': the query writes.*read-only"):
            add_source(catalog, "bad", reader_url, query=query)
    with pytest.raises(errors.InvalidArgument, match="one SELECT"):
        add_source(catalog, "bad", reader_url, query="DELETE FROM patients")
    with pytest.raises(errors.InvalidArgument, match="single statement"):
        add_source(catalog, "bad", reader_url, query="SELECT 1; DROP TABLE patients")
    with pytest.raises(errors.FailedPrecondition, match="no table or view 'nope'"):
        add_source(catalog, "bad", reader_url, table="nope")
    assert catalog.list() == []
    with clinic.connect("clinic") as conn:
        assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == ROWS
        assert conn.execute("SELECT last_value, is_called FROM tickets").fetchone() == (1, False)


def test_refused_connection_and_a_database_gone_mid_read(catalog, clinic, reader_url, tmp_path):
    refused = f"postgresql+psycopg://reader@/clinic?host={tmp_path}/nowhere"
    with pytest.raises(
        errors.FailedPrecondition, match=r"dataset 'down': cannot connect to its database.*server is running"
    ) as e:
        add_source(catalog, "down", refused, table="patients")
    assert f"{tmp_path}/nowhere" in e.value.site_detail and str(tmp_path) not in e.value.message
    assert catalog.list() == []
    add_source(catalog, "clinic", reader_url, table="patients")
    batches = catalog.source("clinic").scan(["id", "age"], batch_rows=100)
    assert len(next(batches)["id"]) == 100
    clinic.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'silolink-agent'")
    with pytest.raises(errors.FailedPrecondition, match=r"dataset 'clinic': the connection to the database was lost"):
        for _ in batches:
            pass
    assert catalog.source("clinic").count() == ROWS  # the next read reconnects


def coordinator_files(coordinator) -> str:
    """Everything the coordinator keeps on disk (database, logs), as text."""
    root = coordinator.layout.root
    return "".join(p.read_bytes().decode("latin-1") for p in sorted(root.rglob("*")) if p.is_file())


def test_agents_answer_analytics_over_sql_and_keep_serving_when_it_fails(
    coordinator, make_agent, clinic, reader_url, monkeypatch, caplog
):
    from silolink.config import AnalyticsConfig, CatalogConfig

    settings = {"analytics": AnalyticsConfig(min_cohort=1), "catalog": CatalogConfig(share_with_coordinator="count")}
    agents = [make_agent(name, **settings) for name in ("hospital-a", "hospital-b")]
    for agent in agents:
        add_source(agent.catalog, "clinic", reader_url, table="patients", label="outcome")
    with support.operator(coordinator) as op:
        client = AnalyticsClient(op)
        result = client.run_query("clinic", "count", ("kind=hospital",), where="age >= 60")
        assert result["count"] == 2 * sum(1 for r in patient_rows(ROWS, 1) if r[1] >= 60)
        assert op.list_site_datasets("hospital-a")["datasets"][0]["row_count"] == ROWS
        monkeypatch.setenv("CLINIC_DB_PASSWORD", "wrong")  # the database now refuses the agents
        with caplog.at_level(logging.WARNING), pytest.raises(errors.SiloError, match="cannot connect") as e:
            client.run_query("clinic", "count", ("kind=hospital",))
        # What left the sites names the dataset and the failure; the account and host stay there.
        assert "dataset 'clinic': cannot connect to its database" in e.value.message
        assert "reader" not in e.value.message
        for private in (str(clinic.socket_dir), "password authentication"):  # in its database and logs neither
            assert private not in e.value.message and private not in coordinator_files(coordinator)
        assert "reader:***@" in caplog.text and "password authentication failed" in caplog.text  # the site's log
        assert "row_count" not in op.list_site_datasets("hospital-a")["datasets"][0]
        monkeypatch.setenv("CLINIC_DB_PASSWORD", PASSWORD)
        assert client.run_query("clinic", "count", ("kind=hospital",))["count"] == 2 * ROWS
