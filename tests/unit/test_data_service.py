"""The agent's side of an app's data requests on its own (a real SQLite catalog): every
request is checked against the site's policy, bad requests get a clear error and leave the
service answering."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from edge_agent.catalog.store import Catalog
from edge_agent.training.data_service import MAX_OPEN_SCANS, DataGrant, DataService


@pytest.fixture
def catalog_path(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text("x,ward,secret,label\n" + "".join(f"{i},w{i % 3},{i * 7},{i % 2}\n" for i in range(50)))
    path = tmp_path / "catalog.db"
    catalog = Catalog.open(path)
    catalog.import_csv(csv, "rows", label="label")
    catalog.mark_sensitive("rows", ["ward", "secret"])
    catalog.db.conn.close()
    return path


def ask(service: DataService, **request):
    answer = service.answer(json.dumps(request).encode())
    if answer[:1] == b"A":
        return pickle.loads(answer[1:])
    return json.loads(answer[1:])


def test_the_app_sees_and_reads_only_what_the_site_allows_it(catalog_path):
    service = DataService(DataGrant(catalog_path, "rows", ("ward",)), "probe:1.0")
    seen = ask(service, op="describe")
    assert [name for name, _ in seen["columns"]] == ["x", "ward", "label"]  # no trace of "secret"
    assert "location" not in seen and "source" not in seen and seen["row_count"] == 50
    cursor = ask(service, op="scan", columns=["x", "ward", "rowid"], present=["label"], batch_rows=20)
    batches = []
    while (batch := ask(service, op="next", cursor=cursor)) is not None:
        batches.append(batch)
    assert [len(b["x"]) for b in batches] == [20, 20, 10]
    assert np.concatenate([b["rowid"] for b in batches]).tolist() == list(range(1, 51))
    refused = ask(service, op="scan", columns=["x", "secret"], present=[], batch_rows=20)
    assert (
        refused["code"] == "PERMISSION_DENIED"
        and "'secret' of dataset 'rows' is marked sensitive" in refused["message"]
    )
    assert ask(service, op="scan", columns=["label"], present=["secret"], batch_rows=5)["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("request_bytes", "code", "says"),
    [
        (b"\x80\x04not json", "INVALID_ARGUMENT", "not JSON"),
        (b"[1, 2]", "INVALID_ARGUMENT", "a JSON object"),
        (b'{"op": "drop"}', "INVALID_ARGUMENT", "unknown data request 'drop'"),
        (b'{"op": "next", "cursor": 99}', "INVALID_ARGUMENT", "no open scan 99"),
        (b'{"op": "scan", "columns": "x", "batch_rows": 5}', "INVALID_ARGUMENT", "list of strings"),
        (b'{"op": "scan", "columns": ["x"], "batch_rows": 0}', "INVALID_ARGUMENT", "batch_rows must be 1 to"),
        (b'{"op": "scan", "columns": ["nope"], "batch_rows": 5}', "INVALID_ARGUMENT", "has no column 'nope'"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_service_keeps_answering(catalog_path, request_bytes, code, says):
    service = DataService(DataGrant(catalog_path, "rows"), "probe:1.0")
    answer = service.answer(request_bytes)
    assert answer[:1] == b"E"
    failure = json.loads(answer[1:])
    assert failure["code"] == code and says in failure["message"], failure
    assert ask(service, op="describe")["name"] == "rows"


def test_scans_are_bounded_and_end_with_the_message(catalog_path):
    service = DataService(DataGrant(catalog_path, "rows"), "probe:1.0")
    cursors = [ask(service, op="scan", columns=["x"], present=[], batch_rows=5) for _ in range(MAX_OPEN_SCANS)]
    assert ask(service, op="scan", columns=["x"], present=[], batch_rows=5)["code"] == "RESOURCE_EXHAUSTED"
    assert ask(service, op="close", cursor=cursors[0]) is None
    service.end_message()
    assert "no open scan" in ask(service, op="next", cursor=cursors[1])["message"]
    assert ask(service, op="scan", columns=["x"], present=[], batch_rows=5) == MAX_OPEN_SCANS + 1


def test_a_dataset_gone_from_the_catalog_is_not_found(catalog_path):
    service = DataService(DataGrant(catalog_path, "other"), "probe:1.0")
    failure = ask(service, op="describe")
    assert failure["code"] == "NOT_FOUND" and "'other'" in failure["message"]
