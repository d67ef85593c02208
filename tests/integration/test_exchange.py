"""Sealed envelopes between real agents through a real coordinator over mTLS: delivery,
agreements, policy, limits, tampering, replay, expiry and key rotation."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

import pytest

from cloud_coordinator.cli.exchange import ExchangeAdmin
from silolink import envelope, errors
from silolink.exchange_protos import header_to_proto
from silolink.gen.exchange.v1 import exchange_pb2
from tests import support
from tests.integration.exchange_world import start_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = start_world(tmp_path_factory.mktemp("exchange"))
    w.add_site("hospital-a")
    w.add_site("hospital-b")
    w.add_site("hospital-c", allowed_recipients=("hospital-b",), allowed_purposes=("bulk", "referral"))
    for name in w.agents:
        w.wait_published(name)
    w.agree("hospital-a", "hospital-b", "referral")
    w.agree("hospital-c", "hospital-b", "bulk")
    yield w
    w.stop()


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def db_rows(world, sql, params=()):
    conn = sqlite3.connect(world.coordinator.layout.database)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_file_is_sealed_stored_received_verified_and_acknowledged(world, tmp_path):
    data = os.urandom(200_000)  # inline at the coordinator? no: above 64 KiB, so a file
    sent = world.site("hospital-a").send(write(tmp_path, "scan.bin", data), "hospital-b", "referral")
    assert sent["suite"] == envelope.HYBRID and sent["size"] == len(data)
    waiting = {e["envelope_id"]: e for e in world.site("hospital-b").inbox()}
    assert waiting[sent["envelope_id"]]["from"] == "hospital-a"
    assert waiting[sent["envelope_id"]]["purpose"] == "referral"
    assert sent["envelope_id"] not in {e["envelope_id"] for e in world.site("hospital-a").inbox()}

    got = world.site("hospital-b").receive(sent["envelope_id"])
    assert got["from"] == "hospital-a" and not got["duplicate"]
    assert open(got["path"], "rb").read() == data
    assert got["sha256"] == hashlib.sha256(data).hexdigest() and got["path"].endswith("scan.bin")
    # Acknowledged: the ciphertext is gone from the coordinator, a tombstone remains.
    blobs = world.coordinator.layout.state / "exchange" / "blobs"
    assert not (blobs / sent["envelope_id"]).exists()
    assert db_rows(
        world, "SELECT state, inline, sealed_key FROM envelopes WHERE envelope_id = ?", [sent["envelope_id"]]
    ) == [("delivered", None, None)]
    assert sent["envelope_id"] not in {e["envelope_id"] for e in world.site("hospital-b").inbox()}
    # Receiving again is harmless: nothing is written twice.
    assert world.site("hospital-b").receive(sent["envelope_id"])["duplicate"] is True


def test_a_large_payload_streams_in_chunks_to_a_chosen_path(world, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    sent = world.site("hospital-a").send(write(tmp_path, "big.bin", data), "hospital-b", "referral")
    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    got = world.site("hospital-b").receive(sent["envelope_id"], out)
    assert got["path"] == str(out) and out.read_bytes() == data


def test_no_agreement_or_an_unaccepted_one_means_no_delivery(world, tmp_path):
    path = write(tmp_path, "x.txt", b"hello")
    with pytest.raises(errors.PermissionDenied, match="no active agreement lets hospital-b send 'referral'"):
        world.site("hospital-b").send(path, "hospital-a", "referral")
    world.agree("hospital-a", "hospital-b", "second-opinion", accept=False)
    with pytest.raises(errors.PermissionDenied, match="hospital-b accepts it"):
        world.site("hospital-a").send(path, "hospital-b", "second-opinion")


def test_the_sending_sites_policy_restricts_recipients_and_purposes(world, tmp_path):
    path = write(tmp_path, "x.txt", b"hello")
    with pytest.raises(errors.PermissionDenied, match="allowed_recipients"):
        world.site("hospital-c").send(path, "hospital-a", "bulk")
    with pytest.raises(errors.PermissionDenied, match="allowed_purposes"):
        world.site("hospital-c").send(path, "hospital-b", "research")


def test_oversized_envelopes_and_exceeded_quotas_are_refused_before_upload(world, tmp_path):
    big = write(tmp_path, "big.bin", b"\0" * (8 * 1024 * 1024 + 1))
    with pytest.raises(errors.ResourceExhausted, match="max_envelope_bytes"):
        world.site("hospital-c").send(big, "hospital-b", "bulk")
    five = write(tmp_path, "five.bin", os.urandom(5 * 1024 * 1024))
    ids = [world.site("hospital-c").send(five, "hospital-b", "bulk")["envelope_id"] for _ in range(2)]
    with pytest.raises(errors.ResourceExhausted, match="quota"):
        world.site("hospital-c").send(five, "hospital-b", "bulk")
    for envelope_id in ids:  # nothing lost: both arrive, and the quota frees up
        assert world.site("hospital-b").receive(envelope_id)["size"] == 5 * 1024 * 1024
    world.site("hospital-c").receive  # noqa: B018 - the client stays usable
    assert world.site("hospital-c").send(five, "hospital-b", "bulk")["size"] == 5 * 1024 * 1024


def test_tampered_ciphertext_is_refused_and_the_envelope_kept(world, tmp_path):
    sent = world.site("hospital-a").send(write(tmp_path, "note.txt", b"a short note"), "hospital-b", "referral")
    conn = sqlite3.connect(world.coordinator.layout.database)
    with conn:
        (blob,) = conn.execute("SELECT inline FROM envelopes WHERE envelope_id = ?", [sent["envelope_id"]]).fetchone()
        flipped = bytes([blob[0] ^ 1]) + blob[1:]
        conn.execute("UPDATE envelopes SET inline = ? WHERE envelope_id = ?", [flipped, sent["envelope_id"]])
    with pytest.raises(errors.PermissionDenied, match="tampered"):
        world.site("hospital-b").receive(sent["envelope_id"])
    assert sent["envelope_id"] in {e["envelope_id"] for e in world.site("hospital-b").inbox()}
    assert not list((world.agents["hospital-b"].layout.root / "inbox").glob("*note.txt"))
    with conn:
        conn.execute("UPDATE envelopes SET inline = ? WHERE envelope_id = ?", [blob, sent["envelope_id"]])
    conn.close()
    assert open(world.site("hospital-b").receive(sent["envelope_id"])["path"], "rb").read() == b"a short note"


def test_a_forged_signature_or_wrong_sender_certificate_is_refused(world, tmp_path):
    sent = world.site("hospital-a").send(write(tmp_path, "n.txt", b"signed"), "hospital-b", "referral")
    conn = sqlite3.connect(world.coordinator.layout.database)
    with conn:
        (sig,) = conn.execute("SELECT signature FROM envelopes WHERE envelope_id = ?", [sent["envelope_id"]]).fetchone()
        conn.execute(
            "UPDATE envelopes SET signature = ? WHERE envelope_id = ?", [sig[:-2] + b"\0\0", sent["envelope_id"]]
        )
    with pytest.raises(errors.PermissionDenied, match="not signed by site hospital-a"):
        world.site("hospital-b").receive(sent["envelope_id"])
    # The coordinator hands hospital-c's certificate as the sender's: refused too.
    (c_fp,) = {r[0] for r in db_rows(world, "SELECT sender_cert FROM envelopes WHERE sender = 'hospital-c'")} or {None}
    with conn:
        conn.execute("UPDATE envelopes SET signature = ? WHERE envelope_id = ?", [sig, sent["envelope_id"]])
        if c_fp:
            conn.execute("UPDATE envelopes SET sender_cert = ? WHERE envelope_id = ?", [c_fp, sent["envelope_id"]])
    conn.close()
    if c_fp:
        with pytest.raises(errors.PermissionDenied, match="not one our CA issued to that site"):
            world.site("hospital-b").receive(sent["envelope_id"])


def test_only_the_recipient_can_fetch_an_envelope(world, tmp_path):
    sent = world.site("hospital-a").send(write(tmp_path, "n.txt", b"for b"), "hospital-b", "referral")
    with pytest.raises(errors.NotFound):
        world.agents["hospital-c"].exchange.receive(sent["envelope_id"])
    world.site("hospital-b").receive(sent["envelope_id"])


def _sealed(world, data: bytes, purpose="referral", ttl_s=3600, recipient="hospital-b"):
    sender = world.agents["hospital-a"].exchange
    key = sender.recipient_key(recipient)
    identity = sender._remote.identity()
    return envelope.seal(data, "hospital-a", key, purpose, identity.key, ttl_s=ttl_s)


def _upload(world, sealed: envelope.SealedEnvelope):
    request = exchange_pb2.SendEnvelopesRequest(
        header=header_to_proto(sealed.header),
        sealed_key=sealed.sealed_key,
        chunks=sealed.chunks,
        signature=sealed.signature,
    )
    return list(world.agents["hospital-a"].exchange._remote.send([request]))


def test_a_resend_is_deduplicated_and_a_replay_after_delivery_refused(world):
    sealed = _sealed(world, b"once only")
    first, again = _upload(world, sealed), _upload(world, sealed)
    assert not first[0].duplicate and again[0].duplicate
    assert [e["envelope_id"] for e in world.site("hospital-b").inbox()].count(sealed.header.envelope_id) == 1
    world.site("hospital-b").receive(sealed.header.envelope_id)
    with pytest.raises(errors.AlreadyExists, match="never delivered twice"):
        _upload(world, sealed)
    # The same id with other content is not a retry.
    other = envelope.SealedEnvelope(sealed.header, sealed.sealed_key, sealed.chunks, sealed.signature[:-1] + b"\1")
    with pytest.raises(errors.AlreadyExists):
        _upload(world, other)


def test_expired_envelopes_are_refused_and_swept(world):
    with pytest.raises(errors.FailedPrecondition, match="expired before it arrived"):
        old = envelope.Header.new(
            "hospital-a",
            "hospital-b",
            "referral",
            world.agents["hospital-a"].exchange.recipient_key("hospital-b"),
            3,
            1,
            now=time.time() - 10,
        )
        sealer = envelope.Sealer(
            old,
            world.agents["hospital-a"].exchange.recipient_key("hospital-b"),
            world.agents["hospital-a"].exchange._remote.identity().key,
        )
        chunk = sealer.seal(0, b"old")
        _upload(world, envelope.SealedEnvelope(old, sealer.sealed_key, [chunk], sealer.finish()))
    short = _sealed(world, b"short-lived", ttl_s=1)
    _upload(world, short)
    support.wait_for(
        lambda: (
            db_rows(world, "SELECT state FROM envelopes WHERE envelope_id = ?", [short.header.envelope_id])
            in ([("expired",)], [])
        ),
        5,
        "the envelope to expire",
    )
    with pytest.raises(errors.FailedPrecondition):
        world.site("hospital-b").receive(short.header.envelope_id)


def test_envelopes_sealed_to_a_rotated_key_still_open(world, tmp_path):
    before = world.site("hospital-a").send(
        write(tmp_path, "old.txt", b"sealed to the old key"), "hospital-b", "referral"
    )
    old_key = [k for k in world.site("hospital-b").keys() if k["current"]][0]
    new_key = world.site("hospital-b").rotate_key(envelope.CLASSIC)
    assert new_key["key_id"] != old_key["key_id"] and new_key["suite"] == envelope.CLASSIC
    after = world.site("hospital-a").send(
        write(tmp_path, "new.txt", b"sealed to the new key"), "hospital-b", "referral"
    )
    assert after["suite"] == envelope.CLASSIC
    assert (
        open(world.site("hospital-b").receive(before["envelope_id"])["path"], "rb").read() == b"sealed to the old key"
    )
    assert open(world.site("hospital-b").receive(after["envelope_id"])["path"], "rb").read() == b"sealed to the new key"
    world.site("hospital-b").rotate_key(envelope.HYBRID)


def test_a_key_published_for_another_site_is_refused(world):
    agent = world.agents["hospital-a"].exchange
    identity = agent._remote.identity()
    fake = envelope.PublishedKey("hospital-b", envelope.CLASSIC, "", b"", 1)
    pair = envelope.KeyPair.generate(envelope.CLASSIC)
    fake = envelope.PublishedKey("hospital-b", pair.suite, pair.key_id, pair.public_bytes, 1).signed(identity.key)
    from silolink.exchange_protos import key_to_proto

    with pytest.raises(errors.PermissionDenied, match="only its own key"):
        agent._remote.publish_key(key_to_proto(fake))


def test_operators_manage_agreements_and_every_step_is_audited(world, tmp_path):
    with world.admin() as op:
        admin = ExchangeAdmin(op)
        agreement_id = world.agree("hospital-b", "hospital-a", "results")
        sent = world.site("hospital-b").send(write(tmp_path, "r.txt", b"results"), "hospital-a", "results")
        world.site("hospital-a").receive(sent["envelope_id"])
        assert admin.revoke_agreement(agreement_id)["state"] == "revoked"
        with pytest.raises(errors.PermissionDenied):
            world.site("hospital-b").send(write(tmp_path, "r2.txt", b"more"), "hospital-a", "results")
        actions = {(e.action, e.subject) for e in world.coordinator.audit.entries()}
        assert {("agreement.create", agreement_id), ("agreement.accept", agreement_id)} <= actions
        assert {("envelope.send", sent["envelope_id"]), ("envelope.deliver", sent["envelope_id"])} <= actions
        assert ("agreement.revoke", agreement_id) in actions
        assert any(a == "site.key.publish" for a, _ in actions)
        assert admin.verify_audit(tmp_path / "audit-pin.json")["entries"] == world.coordinator.audit.head().seq
    assert (
        world.site("hospital-a").verify_audit()["head_seq"] >= world.site("hospital-a").verify_audit()["remembered_seq"]
    )
