"""Parquet and Arrow sources: registered in place, read through the one interface, and the
same answers as the same rows imported from CSV."""

from __future__ import annotations

import math

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the [sources] extra (pip install -e '.[dev]')")
pq = pytest.importorskip("pyarrow.parquet")

from edge_agent.analytics.compute import compute  # noqa: E402
from edge_agent.catalog.reading import DatasetReader, open_dataset  # noqa: E402
from edge_agent.catalog.sources import add_source  # noqa: E402
from edge_agent.catalog.store import Catalog  # noqa: E402
from silolink import errors  # noqa: E402
from silolink.analytics import where as where_mod  # noqa: E402
from silolink.analytics.query import build_query, decode_totals, to_ring  # noqa: E402

ROWS = 5000


def patients(n: int = ROWS, seed: int = 7) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n).tolist()
    bmi = np.round(rng.normal(27, 4, n), 2).tolist()
    ward = rng.choice(["north", "south", "east"], n).tolist()
    outcome = rng.integers(0, 2, n).tolist()
    bmi[3] = None  # an empty value
    ward[5] = None
    return {"id": [f"p{i}" for i in range(n)], "age": age, "bmi": bmi, "ward": ward, "outcome": outcome}


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(tmp_path / "catalog.db")


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "patients.parquet"
    pq.write_table(pa.table(patients()), path, row_group_size=1000)
    return path


def csv_of(tmp_path, columns: dict[str, list]):
    path = tmp_path / "patients.csv"
    names = list(columns)
    lines = [",".join(names)]
    for row in zip(*columns.values(), strict=True):
        lines.append(",".join("" if v is None else str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def answer(source, text: str, where: str = "", clip: str | None = None) -> dict:
    query = build_query(source.dataset.name, text, where=where, clip=clip)
    local = compute(source, query, show_columns=True)
    return decode_totals(query, to_ring(local.values))


def test_parquet_registers_in_place_and_reads_like_the_csv_import(catalog, parquet_file, tmp_path):
    dataset = add_source(catalog, "pq", str(parquet_file), label="outcome", id_column="id")
    assert dataset.kind == "parquet" and dataset.row_count == ROWS
    assert [(c.name, c.type) for c in dataset.columns] == [
        ("id", "TEXT"), ("age", "INTEGER"), ("bmi", "REAL"), ("ward", "TEXT"), ("outcome", "INTEGER"),
    ]  # fmt: skip
    assert not catalog.db["pq"].exists()  # nothing copied
    catalog.import_csv(csv_of(tmp_path, patients()), "csv", label="outcome", id_column="id")
    parquet, table = catalog.source("pq"), catalog.source("csv")
    for text, where, clip in [
        ("count", "", None),
        ("count", "age >= 50 and ward = 'north'", None),
        ("count", "ward != 'north' or bmi < 25", None),
        ("sum age", "outcome = 1", None),
        ("mean bmi", "age < 40", None),
        ("mean bmi", "", "20:30"),
        ("histogram age --bins 20:90:7", "ward = 'south'", None),
    ]:
        got, want = answer(parquet, text, where, clip), answer(table, text, where, clip)
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], abs=1e-4), (text, where, key)
    rows = [r for batch in catalog.read_batches("pq", ["rowid", "id", "bmi"], 999) for r in batch]
    assert len(rows) == ROWS and rows[0] == (1, "p0", rows[0][2]) and rows[3][2] is None


def test_scan_streams_bounded_batches_with_filters_pushed_down(catalog, parquet_file):
    add_source(catalog, "pq", str(parquet_file))
    source = catalog.source("pq")
    node = where_mod.parse("age >= 60 and bmi > 0")
    batches = list(source.scan(["age", "bmi", "ward"], node, present=["ward"], batch_rows=256))
    assert all(len(b["age"]) <= 256 for b in batches)
    ages = np.concatenate([b["age"] for b in batches])
    assert ages.dtype == np.int64 and (ages >= 60).all()
    assert all(w is not None for b in batches for w in b["ward"])
    table = pq.read_table(parquet_file)
    import pyarrow.compute as pc

    expected = table.filter((pc.field("age") >= 60) & (pc.field("bmi") > 0) & pc.field("ward").is_valid())
    assert len(ages) == expected.num_rows == source.count(where_mod.parse("age >= 60 and bmi > 0 and ward != ''"))


def test_a_folder_of_parquet_files_is_one_dataset(catalog, tmp_path):
    folder = tmp_path / "sensors"
    folder.mkdir()
    for part in range(3):
        table = pa.table({"machine": [f"m{part}"] * 100, "temp": np.linspace(20, 30, 100) + part})
        pq.write_table(table, folder / f"part-{part}.parquet")
    (folder / "_SUCCESS").write_text("")
    dataset = add_source(catalog, "sensors", str(folder))
    assert dataset.row_count == 300
    rows, total = catalog.source("sensors").summarize("temp", where_mod.parse("machine = 'm2'"))
    assert rows == 100 and total == pytest.approx(math.fsum(np.linspace(20, 30, 100) + 2))


def test_arrow_ipc_files_are_read_too(catalog, tmp_path):
    import pyarrow.feather as feather

    path = tmp_path / "readings.arrow"
    feather.write_feather(pa.table({"x": [1.5, 2.5, None], "y": [1, 0, 1]}), path)
    assert add_source(catalog, "readings", str(path), label="y").row_count == 3
    assert catalog.source("readings").summarize("x") == (2, 4.0)


def test_sensitive_columns_are_hidden_refused_and_allowed_per_app(catalog, parquet_file):
    add_source(catalog, "pq", str(parquet_file), label="outcome", id_column="id", sensitive=["ward"])
    assert "ward" not in [c["name"] for c in catalog.summary("schema")[0]["columns"]]
    source = catalog.source("pq")
    with pytest.raises(errors.PermissionDenied, match="'ward' of dataset 'pq' is marked sensitive"):
        compute(source, build_query("pq", "count", where="ward = 'north'"), True)
    catalog.mark_sensitive("pq", ["age"])
    source = catalog.source("pq")
    with pytest.raises(errors.PermissionDenied, match="histogram"):
        compute(source, build_query("pq", "histogram age --bins 0:100:10"), True)
    assert answer(source, "mean age")["count"] == ROWS  # an aggregate over the column is allowed
    config = {"catalog": str(catalog._path()), "dataset": "pq"}
    reader = open_dataset(config)
    assert "age" not in reader.features and "age" not in [c.name for c in reader.columns]
    with pytest.raises(errors.PermissionDenied, match="sensitive_for_apps"):
        reader.arrays(["age", "bmi"])
    allowed = DatasetReader(catalog._path(), "pq", sensitive_allowed=["age"])
    X, y = allowed.arrays(["age", "bmi"])
    assert X.shape == (ROWS, 2) and np.isnan(X[3, 1]) and y.dtype == np.int64 and len(y) == ROWS


def test_missing_and_unreadable_files_name_the_dataset_and_register_nothing(catalog, tmp_path, parquet_file):
    with pytest.raises(errors.NotFound, match="no such file"):
        add_source(catalog, "gone", str(tmp_path / "gone.parquet"))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(parquet_file.read_bytes()[:3000])  # cut short, as if still being written
    with pytest.raises(errors.FailedPrecondition, match=r"dataset 'broken': .* not a readable Parquet.*re-export"):
        add_source(catalog, "broken", str(broken))
    with pytest.raises(errors.InvalidArgument, match="--label 'nope' is not a column of dataset 'pq'"):
        add_source(catalog, "pq", str(parquet_file), label="nope")
    assert catalog.list() == []
    csv = tmp_path / "x.csv"
    csv.write_text("a\n1\n")
    with pytest.raises(errors.InvalidArgument, match="edge-agent data import"):
        add_source(catalog, "x", str(csv))
    add_source(catalog, "pq", str(parquet_file))
    parquet_file.unlink()  # the file goes away after registration
    with pytest.raises(errors.NotFound, match=r"dataset 'pq': .* does not exist; restore the file"):
        catalog.source("pq").count()
    assert catalog.summary("count") == [{"name": "pq", "columns": catalog.summary("schema")[0]["columns"],
                                          "label": None}]  # fmt: skip
    assert catalog.drop("pq").kind == "parquet"
