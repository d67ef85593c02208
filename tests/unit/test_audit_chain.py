"""The audit chain detects any edit, deletion or reordering."""

import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_coordinator.audit.store import AuditLog
from silolink import errors
from silolink.audit.chain import AuditEntry, verify
from silolink.db import open_database


@pytest.fixture(params=["memory", "file"])
def log(request, tmp_path):
    db = open_database(None if request.param == "memory" else tmp_path / "audit.db")
    audit = AuditLog(db, Ed25519PrivateKey.generate())
    for i in range(5):
        audit.record("operator:admin", "site.add", f"site-{i}", kind="hospital")
    yield audit
    db.close()


def test_an_intact_chain_verifies_and_returns_its_head(log):
    assert log.verify() == log.head().hash
    # A site that saw entry 2 verifies only what came after it.
    seen = log.entries()[1]
    assert verify(log.entries(after_seq=2), log.public_key, seen.hash) == log.head().hash


@pytest.mark.parametrize(
    "tamper,message",
    [
        (lambda es: [dataclasses.replace(es[0], subject="other"), *es[1:]], "altered"),
        (lambda es: [es[0], *es[2:]], "missing"),
        (lambda es: [es[0], es[2], es[1], *es[3:]], "missing or out of order"),
        (lambda es: [*es[:-1], dataclasses.replace(es[-1], signature="00" * 64)], "not signed"),
    ],
)
def test_edits_deletions_and_reordering_are_detected(log, tamper, message):
    with pytest.raises(errors.FailedPrecondition, match=message):
        verify(tamper(log.entries()), log.public_key)


def test_a_rewritten_chain_without_the_key_is_detected(log):
    forger = AuditLog(open_database(None), Ed25519PrivateKey.generate())
    for entry in log.entries():
        forger.record(entry.actor, entry.action, entry.subject, **entry.details)
    with pytest.raises(errors.FailedPrecondition, match="not signed"):
        verify(forger.entries(), log.public_key)


def test_a_batch_is_signed_once_and_verifies(log):
    batch = log.record_batch([("site:a", "envelope.send", f"env-{i}", {"recipient": "b"}) for i in range(4)])
    assert [bool(e.signature) for e in batch] == [False, False, False, True]
    assert log.verify() == batch[-1].hash
    # Cutting the chain before the batch's signature leaves entries no signature covers.
    entries = log.entries()
    with pytest.raises(errors.FailedPrecondition, match="not signed"):
        verify(entries[:-1], log.public_key)
    # Editing an unsigned entry inside the batch breaks the link to its successor.
    edited = [*entries[:6], dataclasses.replace(entries[6], subject="forged"), *entries[7:]]
    with pytest.raises(errors.FailedPrecondition, match="altered"):
        verify(edited, log.public_key)


@pytest.mark.parametrize(
    "details",
    [{}, {"n": 1, "name": "ünïcode ✓", "nested": {"b": [1, 2.5, None, True], "a": "x"}}, {"bytes": 10**20}],
)
def test_content_is_the_sorted_compact_json_of_the_entry(details):
    entry = AuditEntry(7, 1764115200.123456, "site:hospital-a", "envelope.send", 'id "q"', details, "ab" * 32)
    body = {k: getattr(entry, k) for k in ("seq", "at", "actor", "action", "subject", "details", "prev_hash")}
    assert entry.content() == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
