"""The local model store: checked on install, content-addressed, one active version."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.models.store import ModelStore, parse_ref
from silolink import errors
from tests.onnx_builders import linear_model


@pytest.fixture
def store(tmp_path):
    return ModelStore.open(tmp_path / "agent.db", tmp_path / "blobs")


@pytest.fixture
def model_file(tmp_path):
    return linear_model(tmp_path / "m.onnx", np.eye(3, 2, dtype=np.float32))


def leftovers(store):
    return sorted(p.name for p in store.blobs.iterdir()) if store.blobs.exists() else []


def test_install_records_signature_and_activates(store, model_file):
    record = store.install(model_file, "risk", "1")
    assert record.active and record.ref == "risk:1"
    assert [s.describe() for s in record.signature.inputs] == ["x: float32[?, 3]"]
    assert [s.name for s in record.signature.outputs] == ["scores", "label"]
    assert store.blob_path(record.sha256).read_bytes() == model_file.read_bytes()
    assert store.get("risk") == record


def test_same_bytes_shared_and_versions_switch(store, model_file, tmp_path):
    one = store.install(model_file, "risk", "1")
    two = store.install(model_file, "risk", "2", activate=False)
    assert one.sha256 == two.sha256 and len(leftovers(store)) == 1
    assert store.get("risk").version == "1"
    store.activate("risk", "2")
    assert store.get("risk").version == "2"
    store.remove("risk", "2")
    assert store.get("risk").version == "1"
    assert len(leftovers(store)) == 1  # still used by version 1
    store.remove("risk", "1")
    assert leftovers(store) == []
    with pytest.raises(errors.NotFound, match="none is installed"):
        store.get("risk")


def test_reinstall_is_idempotent_but_different_bytes_are_refused(store, model_file, tmp_path):
    store.install(model_file, "risk", "1")
    assert store.install(model_file, "risk", "1").version == "1"
    other = linear_model(tmp_path / "other.onnx", np.ones((3, 2), np.float32))
    with pytest.raises(errors.AlreadyExists, match="different content"):
        store.install(other, "risk", "1")
    assert len(leftovers(store)) == 1


def test_a_moved_file_is_taken_and_hashed_like_a_copied_one(store, model_file, tmp_path):
    expected = model_file.read_bytes()
    copied = store.install(model_file, "risk", "1")
    staged = tmp_path / "staged.onnx"
    staged.write_bytes(expected)
    moved = store.install(staged, "risk", "2", move=True)
    assert not staged.exists() and moved.sha256 == copied.sha256
    assert store.blob_path(moved.sha256).read_bytes() == expected
    assert [p for p in leftovers(store) if p.startswith(".incoming")] == []


def test_a_moved_file_that_fails_the_check_leaves_nothing(store, tmp_path):
    staged = tmp_path / "staged.onnx"
    staged.write_bytes(b"\x08\x07garbage-protobuf")
    with pytest.raises(errors.InvalidArgument, match="not a valid ONNX model"):
        store.install(staged, "risk", "1", move=True)
    assert store.list() == [] and leftovers(store) == []


@pytest.mark.parametrize("content", [b"", b"name,age\nann,3\n", b"\x08\x07garbage-protobuf"])
def test_bad_files_are_refused_and_leave_nothing(store, tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(errors.InvalidArgument, match="bad.onnx"):
        store.install(path, "risk", "1")
    assert store.list() == [] and leftovers(store) == []


def test_truncated_model_is_refused(store, model_file, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model_file.read_bytes()[:-20])
    with pytest.raises(errors.InvalidArgument, match="not a valid ONNX model"):
        store.install(cut, "risk", "1")
    assert leftovers(store) == []


def test_not_found_names_what_is_installed(store, model_file):
    store.install(model_file, "risk", "1")
    with pytest.raises(errors.NotFound, match="has no version '9'; installed: 1"):
        store.get("risk", "9")
    with pytest.raises(errors.NotFound, match="installed: risk"):
        store.get("other")


def test_names_are_checked(store, model_file):
    with pytest.raises(errors.InvalidArgument, match="model name"):
        store.install(model_file, "../etc", "1")
    with pytest.raises(errors.InvalidArgument, match="version"):
        parse_ref("risk:has space")
    assert parse_ref("risk") == ("risk", None)


def test_other_processes_changes_are_noticed(store, model_file, tmp_path):
    other = ModelStore.open(tmp_path / "agent.db", tmp_path / "blobs")
    before = store.changes()
    other.install(model_file, "risk", "1")
    assert store.changes() != before
    assert store.get("risk").version == "1"
