"""The catalog: CSV import with type inference, errors by line, nothing half-imported."""

from __future__ import annotations

import pytest

from edge_agent.catalog.store import Catalog
from silolink import errors


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(tmp_path / "catalog.db")


def write(tmp_path, text: str, name: str = "data.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_import_infers_types_and_records_roles(catalog, tmp_path):
    path = write(tmp_path, "id,age,weight,ward,outcome\np1,54,71.5,north,1\np2,61,,south,0\np3,47,80,north,1\n")
    dataset = catalog.import_csv(path, "patients", label="outcome", id_column="id")
    assert [(c.name, c.type) for c in dataset.columns] == [
        ("id", "TEXT"),
        ("age", "INTEGER"),
        ("weight", "REAL"),
        ("ward", "TEXT"),
        ("outcome", "INTEGER"),
    ]
    assert dataset.row_count == 3
    assert dataset.features == ["age", "weight", "ward"]
    assert catalog.describe("patients") == dataset
    assert [d.name for d in catalog.list()] == ["patients"]
    rows = [r for batch in catalog.read_batches("patients", ["id", "weight"], 2) for r in batch]
    assert rows == [("p1", 71.5), ("p2", None), ("p3", 80.0)]


def test_utf8_bom_and_quoted_fields(catalog, tmp_path):
    path = write(tmp_path, '\ufeffname,note\n"Müller, A.","said ""hi"""\n')
    dataset = catalog.import_csv(path, "notes")
    assert [c.name for c in dataset.columns] == ["name", "note"]
    assert next(catalog.read_batches("notes", ["name", "note"], 10)) == [("Müller, A.", 'said "hi"')]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3\n4,5\n", "line 3: 1 fields, but the header names 2 columns"),
        ("a,b\n1,2\n3,4,5\n", "line 3: 3 fields"),
        ("", "is empty"),
        ("a,b\n", "has a header but no rows"),
        ("a,,c\n1,2,3\n", "column 2 has no name"),
        ("a,A\n1,2\n", "appears twice"),
        ('a,b\n1,"2\n', "line 2"),
    ],
)
def test_bad_csv_names_the_line_and_imports_nothing(catalog, tmp_path, text, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        catalog.import_csv(write(tmp_path, text), "broken")
    assert catalog.list() == []
    assert not catalog.db["broken"].exists()


def test_bad_encoding_names_the_line(catalog, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name,city\nann,Köln\n".encode("latin-1"))
    with pytest.raises(errors.InvalidArgument, match=r"line 2: not valid UTF-8"):
        catalog.import_csv(path, "cities")
    assert catalog.list() == []


def test_duplicate_and_empty_ids_are_refused(catalog, tmp_path):
    with pytest.raises(errors.InvalidArgument, match="line 3: id 'id' value repeats"):
        catalog.import_csv(write(tmp_path, "id,x\na,1\na,2\n"), "d", id_column="id")
    with pytest.raises(errors.InvalidArgument, match="line 2: the id column 'id' is empty"):
        catalog.import_csv(write(tmp_path, "id,x\n,1\n"), "d", id_column="id")
    with pytest.raises(errors.InvalidArgument, match="--label 'y' is not a column"):
        catalog.import_csv(write(tmp_path, "id,x\na,1\n"), "d", label="y")


def test_existing_dataset_needs_replace_and_replace_is_atomic(catalog, tmp_path):
    catalog.import_csv(write(tmp_path, "x\n1\n2\n"), "d")
    with pytest.raises(errors.AlreadyExists, match="--replace"):
        catalog.import_csv(write(tmp_path, "x\n3\n"), "d")
    with pytest.raises(errors.InvalidArgument):
        catalog.import_csv(write(tmp_path, "x,y\n3\n"), "d", replace=True)
    assert catalog.describe("d").row_count == 2  # the failed replace left the old rows
    assert catalog.import_csv(write(tmp_path, "x\n3\n"), "d", replace=True).row_count == 1


def test_failure_during_insert_rolls_back(catalog, tmp_path, monkeypatch):
    from edge_agent.catalog import csv_import

    real = csv_import._converter

    def failing(column):
        convert = real(column)
        calls = {"n": 0}

        def wrapped(value):
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError("disk went away")
            return convert(value)

        return wrapped

    monkeypatch.setattr(csv_import, "_converter", failing)
    with pytest.raises(OSError):
        catalog.import_csv(write(tmp_path, "x\n" + "\n".join(str(i) for i in range(10)) + "\n"), "d", batch_rows=2)
    assert catalog.list() == []
    assert not catalog.db["d"].exists()


def test_names_are_checked_and_drop_forgets(catalog, tmp_path):
    with pytest.raises(errors.InvalidArgument, match="dataset name"):
        catalog.import_csv(write(tmp_path, "x\n1\n"), "drop table;")
    with pytest.raises(errors.InvalidArgument, match="dataset name"):
        catalog.import_csv(write(tmp_path, "x\n1\n"), "sqlite_master")
    catalog.import_csv(write(tmp_path, "x\n1\n"), "d")
    assert catalog.drop("d").name == "d"
    with pytest.raises(errors.NotFound, match="the catalog is empty"):
        catalog.describe("d")


def test_summary_follows_the_share_policy(catalog, tmp_path):
    catalog.import_csv(write(tmp_path, "age,outcome\n50,1\n60,0\n"), "patients", label="outcome")
    assert catalog.summary("nothing") == []
    assert catalog.summary("name") == [{"name": "patients"}]
    schema = catalog.summary("schema")[0]
    assert schema["columns"] == [{"name": "age", "type": "INTEGER"}, {"name": "outcome", "type": "INTEGER"}]
    assert "row_count" not in schema
    assert catalog.summary("count")[0]["row_count"] == 2


def test_a_csv_wider_than_sqlite_allows_is_one_line_naming_the_limit(catalog, tmp_path):
    # Issue 15 item 5: 2,001 columns ended in sqlite3's "too many columns" traceback.
    def wide(count: int):
        return write(tmp_path, ",".join(f"c{i}" for i in range(count)) + "\n" + ",".join("1" * count) + "\n")

    with pytest.raises(
        errors.InvalidArgument, match=r"^data.csv: line 1: 2,001 columns; a dataset holds at most 2,000"
    ):
        catalog.import_csv(wide(2001), "wide")
    assert catalog.list() == []
    assert len(catalog.import_csv(wide(2000), "wide").columns) == 2000
