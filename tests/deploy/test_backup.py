"""Backup and restore of a coordinator's data directory: online, verified, restartable."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from cloud_coordinator import backup, bootstrap
from cloud_coordinator.audit.store import AuditLog
from cloud_coordinator.exchange.segments import segment_name
from cloud_coordinator.exchange.store import EnvelopeRecord, ExchangeStore
from cloud_coordinator.layout import CoordinatorLayout
from silolink import errors
from silolink.db import open_database
from silolink.envelope import DEFAULT_SUITE, Header
from tests import support


def cli(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "cloud_coordinator", *args, "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_restore_brings_back_sites_agents_models_and_the_audit_chain(tmp_path):
    data, restored = tmp_path / "coordinator", tmp_path / "restored"
    coordinator = support.start_coordinator(data)
    agent = None
    try:
        support.enroll_site(coordinator, "hospital-a", tmp_path / "hospital-a")
        support.enroll_site(coordinator, "factory-b", tmp_path / "factory-b", kind="factory")
        with support.operator(coordinator) as client:
            client.add_site("pending-c", "hospital")
        agent = support.start_agent(tmp_path / "hospital-a")
        assert agent.wait_connected(10)
        # A model in the registry: its blob, manifest and signature must come back intact.
        import numpy as np

        from tests.onnx_builders import linear_model

        pushed = coordinator.registry.push_file(linear_model(tmp_path / "m.onnx", np.eye(3, 2)), "risk")
        blob = coordinator.registry.blob_path(pushed.sha256)
        audit_head = coordinator.audit.head()
        assert audit_head is not None and audit_head.seq >= 5

        taken = cli("backup", "--data-dir", str(data), "--output", str(tmp_path / "backup.tar.gz"))
        assert taken["audit_entries"] == audit_head.seq and taken["audit_head"] == audit_head.hash
        assert "state/coordinator.db" in taken["databases"]
        with support.operator(coordinator) as client:  # after the snapshot: not in the backup
            client.add_site("after-backup", "hospital")
    finally:
        if agent is not None:
            agent.stop(0)
        coordinator.stop(0)

    done = cli("restore", "--input", str(tmp_path / "backup.tar.gz"), "--data-dir", str(restored))
    assert done["audit_entries"] == audit_head.seq and done["audit_head"] == audit_head.hash
    assert (restored / blob.relative_to(data)).read_bytes() == blob.read_bytes()
    assert not (restored / "run").exists()

    identity_before = (tmp_path / "hospital-a" / "pki" / "identity.pem").read_bytes()
    coordinator = support.start_coordinator(restored)
    try:
        agent = support.start_agent(tmp_path / "hospital-a", coordinator_address=coordinator.address)
        assert agent.wait_connected(10), agent.link.status.last_error
        with support.operator(coordinator) as client:
            states = {s["name"]: s["state"] for s in client.list_sites()}
        assert states == {"hospital-a": "online", "factory-b": "offline", "pending-c": "pending"}
        # The site came back with the certificate it had: nothing was re-issued.
        assert (tmp_path / "hospital-a" / "pki" / "identity.pem").read_bytes() == identity_before
        assert coordinator.audit.entries(limit=audit_head.seq)[-1].hash == audit_head.hash
        coordinator.audit.verify()
        model = coordinator.registry.get("risk", pushed.version)
        assert (model.sha256, model.manifest_signature) == (pushed.sha256, pushed.manifest_signature)
        import hashlib

        assert hashlib.sha256(coordinator.registry.blob_path(model.sha256).read_bytes()).hexdigest() == model.sha256
    finally:
        agent.stop(0)
        coordinator.stop(0)


def test_a_backup_taken_during_writes_is_one_consistent_snapshot(tmp_path):
    data = tmp_path / "coordinator"
    bootstrap.init(data, ["localhost"])
    layout = CoordinatorLayout(data)
    audit = AuditLog(open_database(layout.database), bootstrap.load_audit_key(layout))
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            audit.record("operator:admin", "test.write", "subject", n=1)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        support.wait_for(lambda: (audit.head() or None) and audit.head().seq > 50, 10, "writes under way")
        taken = backup.backup(data, tmp_path / "b.tar.gz")
    finally:
        stop.set()
        writer.join()
    final = audit.head()
    audit.db.close()
    assert taken.audit_entries is not None and 50 < taken.audit_entries < final.seq  # writes went on meanwhile
    restored = backup.restore(tmp_path / "b.tar.gz", tmp_path / "restored")
    assert (restored.audit_entries, restored.audit_head) == (taken.audit_entries, taken.audit_head)


def pending_envelope_in_a_segment(data: Path):
    """A coordinator data directory whose database has one pending envelope in segment 1."""
    bootstrap.init(data, ["localhost"])
    layout = CoordinatorLayout(data)
    db = open_database(layout.database)
    store = ExchangeStore(db)
    header = Header(str(uuid.uuid4()), "hospital-a", "hospital-b", "share", "k" * 16, DEFAULT_SUITE, 1, 3600, 1024)
    record = EnvelopeRecord.received(header, b"key", b"signature", "f" * 64, b"x" * 1040, time.time())
    store.insert_new_rows([], [(*record.segment_row_head(), 1, 0, 3)])
    segment = data / "state" / "exchange" / "segments" / segment_name(1)
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"key" + b"x" * 1040)
    return db, header.envelope_id, segment


def test_a_backup_retakes_its_snapshot_when_a_file_it_needs_is_deleted_meanwhile(tmp_path, monkeypatch):
    db, envelope_id, segment = pending_envelope_in_a_segment(tmp_path / "coordinator")
    add_file = backup._add_file

    def delivered_while_copying(tar, rel, path):
        # As the broker does once the last envelope in a segment is delivered: row, then file.
        if path == segment and segment.exists():
            db.execute("UPDATE envelopes SET state = 'delivered' WHERE envelope_id = ?", [envelope_id])
            db.conn.commit()
            segment.unlink()
        return add_file(tar, rel, path)

    monkeypatch.setattr(backup, "_add_file", delivered_while_copying)
    taken = backup.backup(tmp_path / "coordinator", tmp_path / "b.tar.gz")
    with tarfile.open(taken.output) as tar:
        assert not any(name.endswith(segment.name) for name in tar.getnames())
    backup.restore(taken.output, tmp_path / "restored")
    restored = open_database(CoordinatorLayout(tmp_path / "restored").database)
    # The snapshot taken again: the envelope is delivered there, so nothing needs the segment.
    assert restored.execute("SELECT state FROM envelopes WHERE envelope_id = ?", [envelope_id]).fetchone() == (
        "delivered",
    )


def test_a_backup_missing_a_file_its_snapshot_needs_fails_and_writes_nothing(tmp_path, monkeypatch):
    _, _, segment = pending_envelope_in_a_segment(tmp_path / "coordinator")
    add_file = backup._add_file

    def lost(tar, rel, path):
        if path == segment:
            segment.unlink(missing_ok=True)
        return add_file(tar, rel, path)

    monkeypatch.setattr(backup, "_add_file", lost)
    with pytest.raises(errors.Aborted, match=segment.name):
        backup.backup(tmp_path / "coordinator", tmp_path / "b.tar.gz")
    assert list(tmp_path.glob("b.tar.gz*")) == [] and list(tmp_path.glob(".b.tar.gz*")) == []


@pytest.fixture
def archive(tmp_path) -> Path:
    bootstrap.init(tmp_path / "coordinator", ["localhost"])
    return backup.backup(tmp_path / "coordinator", tmp_path / "b.tar.gz").output


def rewrite(archive: Path, target: Path, change) -> Path:
    """A copy of ``archive`` with each member passed through ``change(info, data)``."""
    with tarfile.open(archive) as src, tarfile.open(target, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b""
            for new_info, new_data in change(info, data):
                new_info.size = len(new_data)
                dst.addfile(new_info, io.BytesIO(new_data) if new_info.isfile() else None)
    return target


def test_restore_refuses_a_directory_that_is_not_empty(archive, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(errors.FailedPrecondition, match="not empty"):
        backup.restore(archive, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_restore_refuses_an_altered_file_and_leaves_nothing(archive, tmp_path):
    def alter(info, data):
        yield info, (data.replace(b"localhost", b"attacker") if info.name == "coordinator.toml" else data)

    damaged = rewrite(archive, tmp_path / "damaged.tar.gz", alter)
    with pytest.raises(errors.InvalidArgument, match="coordinator.toml does not match its SHA-256"):
        backup.restore(damaged, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_refuses_paths_outside_the_data_directory(archive, tmp_path):
    def escape(info, data):
        yield info, data
        if info.name == "coordinator.toml":
            evil = tarfile.TarInfo("../escaped.txt")
            yield evil, b"x"

    with pytest.raises(errors.InvalidArgument, match="outside the data directory"):
        backup.restore(rewrite(archive, tmp_path / "evil.tar.gz", escape), tmp_path / "out" / "restored")
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "out" / "restored").exists()


def test_restore_refuses_a_truncated_archive(archive, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(errors.InvalidArgument, match="not a complete silolink coordinator backup"):
        backup.restore(cut, tmp_path / "restored")


def test_backup_refuses_to_overwrite_or_to_write_into_the_data_directory(archive, tmp_path):
    with pytest.raises(errors.AlreadyExists):
        backup.backup(tmp_path / "coordinator", archive)
    with pytest.raises(errors.InvalidArgument, match="outside the data directory"):
        backup.backup(tmp_path / "coordinator", tmp_path / "coordinator" / "b.tar.gz")
    with pytest.raises(errors.FailedPrecondition, match="holds no coordinator"):
        backup.backup(tmp_path, tmp_path / "other.tar.gz")
