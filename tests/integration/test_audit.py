"""The audit chain verified by the operator and by a site against a real coordinator:
edits, deletions and reordering are caught, and a coordinator that rewrites and re-signs
its history is caught by the site that remembered the old head."""

from __future__ import annotations

import sqlite3

import pytest

from cloud_coordinator.bootstrap import load_audit_key
from cloud_coordinator.cli.exchange import ExchangeAdmin
from silolink import errors
from silolink.audit.chain import AuditEntry, seal
from tests import support
from tests.integration.exchange_world import start_world


@pytest.fixture
def world(tmp_path):
    w = start_world(tmp_path)
    w.add_site("hospital-a")
    w.add_site("hospital-b")
    w.wait_published("hospital-a")
    w.wait_published("hospital-b")
    w.agree("hospital-a", "hospital-b", "referral")
    yield w
    w.stop()


def rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
    finally:
        conn.close()


def replace_rows(db, new_rows):
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM audit_log")
        conn.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new_rows)
    conn.close()


def operator_verify(world):
    with world.admin() as op:
        return ExchangeAdmin(op).verify_audit()


def test_tampering_with_the_chain_is_detected_by_operator_and_site(world, tmp_path):
    note = tmp_path / "n.txt"
    note.write_bytes(b"x")
    sent = world.site("hospital-a").send(note, "hospital-b", "referral")
    world.site("hospital-b").receive(sent["envelope_id"])
    db = world.coordinator.layout.database
    head = world.coordinator.audit.head()
    # The site follows the chain on its own (every audit_poll_s) and remembers the head.
    support.wait_for(
        lambda: world.agents["hospital-a"].exchange_worker._watcher.head().seq >= head.seq,
        10,
        "the site to see the head",
    )
    assert operator_verify(world)["head_seq"] == head.seq
    assert world.site("hospital-a").verify_audit()["remembered_seq"] >= head.seq
    original = rows(db)

    # An edit of one entry's content.
    edited = [list(r) for r in original]
    edited[2][4] = "someone-else"
    replace_rows(db, [tuple(r) for r in edited])
    with pytest.raises(errors.FailedPrecondition, match="entry 3: its content was altered"):
        operator_verify(world)
    with pytest.raises(errors.FailedPrecondition, match="entry 3"):
        world.site("hospital-a").verify_audit()

    # Two entries swapped.
    swapped = list(original)
    swapped[3], swapped[4] = (original[4][0],) + original[3][1:], (original[3][0],) + original[4][1:]
    replace_rows(db, swapped)
    with pytest.raises(errors.FailedPrecondition, match="does not follow its predecessor"):
        operator_verify(world)

    # The last entries deleted.
    replace_rows(db, original[:-2])
    operator_verify(world)  # a shorter chain is self-consistent...
    with pytest.raises(errors.FailedPrecondition, match="has been deleted"):
        world.site("hospital-a").verify_audit()  # ...but the site saw more

    # A coordinator rewriting history with its own key: self-consistent, re-signed.
    key = load_audit_key(world.coordinator.layout)
    forged, prev = [], "0" * 64
    for r in original:
        entry = AuditEntry(r[0], r[1], r[2], r[3], "rewritten" if r[0] == 2 else r[4], {}, prev)
        entry = seal(entry, key)
        forged.append(
            (entry.seq, entry.at, entry.actor, entry.action, entry.subject, "{}", prev, entry.hash, entry.signature)
        )
        prev = entry.hash
    replace_rows(db, forged)
    assert operator_verify(world)["entries"] == len(original)
    with pytest.raises(errors.FailedPrecondition, match="no longer has the hash this site saw"):
        world.site("hospital-a").verify_audit()

    replace_rows(db, original)
    assert world.site("hospital-a").verify_audit()["head_seq"] == head.seq
