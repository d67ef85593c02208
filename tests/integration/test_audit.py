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
        return ExchangeAdmin(op).verify_audit(world.root / "operator-audit-pin.json")


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

    # The last entries deleted: a shorter chain is self-consistent, but the site saw more.
    replace_rows(db, original[:-2])
    with pytest.raises(errors.FailedPrecondition, match="has been deleted"):
        world.site("hospital-a").verify_audit()

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
    with pytest.raises(errors.FailedPrecondition, match="no longer has the hash this site saw"):
        world.site("hospital-a").verify_audit()

    replace_rows(db, original)
    assert world.site("hospital-a").verify_audit()["head_seq"] == head.seq


def resign(original_rows, key, subject_of_2="rewritten"):
    """The chain rewritten and re-signed with ``key``: consistent on its own."""
    forged, prev = [], "0" * 64
    for r in original_rows:
        entry = seal(AuditEntry(r[0], r[1], r[2], r[3], subject_of_2 if r[0] == 2 else r[4], {}, prev), key)
        forged.append(
            (entry.seq, entry.at, entry.actor, entry.action, entry.subject, "{}", prev, entry.hash, entry.signature)
        )
        prev = entry.hash
    return forged


def test_the_operator_pins_head_and_key_and_catches_every_cut_at_the_end(tmp_path):
    # Issue 15 item 7: each of these chains is consistent on its own and passed before.
    data_dir, pin = tmp_path / "coordinator", tmp_path / "operator" / "audit-pin.json"
    coordinator = support.start_coordinator(data_dir)

    def verify():
        with support.operator(coordinator) as op:
            return ExchangeAdmin(op).verify_audit(pin)

    try:
        with support.operator(coordinator) as op:
            for name in ("hospital-a", "hospital-b", "hospital-c", "factory-a"):
                op.add_site(name, "hospital")
        first = verify()
        assert first["first_pin"] and pin.exists()
        db = coordinator.layout.database
        original = rows(db)
        assert first["head_seq"] == len(original) >= 4
        cuts = {
            "the last entry dropped": (
                original[:-1],
                "entry 4, which this operator machine saw before, has been deleted",
            ),
            "the last 3 entries dropped": (original[:-3], "has been deleted"),
            "the table emptied": ([], "has been deleted"),
            "rewritten with the same key": (
                resign(original, load_audit_key(coordinator.layout)),
                "no longer has the hash",
            ),
        }
        for what, (chain, message) in cuts.items():
            replace_rows(db, chain)
            with pytest.raises(errors.FailedPrecondition, match=message) as caught:
                verify()
            assert str(pin) in caught.value.message, what

        # A coordinator given a new audit key, its whole chain re-signed with it.
        coordinator.stop(0)
        key_pem = coordinator.layout.audit_key.read_bytes()
        coordinator.layout.audit_key.unlink()
        coordinator = support.start_coordinator(data_dir)  # makes a new audit key
        replace_rows(db, resign(original, load_audit_key(coordinator.layout), original[1][4]))
        with pytest.raises(errors.FailedPrecondition, match="audit key is not the one this operator machine pinned"):
            verify()

        # The pin never moved to a bad chain: with the real key and chain back, it verifies and moves on.
        coordinator.stop(0)
        coordinator.layout.audit_key.write_bytes(key_pem)
        replace_rows(db, original)
        coordinator = support.start_coordinator(data_dir)
        again = verify()
        assert not again["first_pin"] and again["pinned_seq_before"] == len(original)
        with support.operator(coordinator) as op:
            op.add_site("hospital-z", "hospital")
        grown = verify()
        assert grown["head_seq"] > len(original) and grown["pinned_seq_before"] == len(original)
    finally:
        coordinator.stop(0)
