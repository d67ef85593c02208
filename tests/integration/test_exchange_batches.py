"""Whole envelopes, many to a request: stored in segment files, receipted only once
durable, each recorded in the audit chain, refused one by one with the same rules, and
readable after the sweeper moves them out of a sparse segment."""

from __future__ import annotations

import dataclasses
import os

import pytest

from cloud_coordinator.exchange.audit_entries import SEND_BATCH, envelope_ids
from cloud_coordinator.exchange.segments import SUFFIX
from silolink import envelope, errors
from silolink.exchange_protos import upload_requests, whole_to_proto
from silolink.gen.exchange.v1 import exchange_pb2
from tests import support
from tests.integration.exchange_world import start_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = start_world(tmp_path_factory.mktemp("batches"))
    w.add_site("hospital-a")
    w.add_site("hospital-b")
    for name in w.agents:
        w.wait_published(name)
    w.agree("hospital-a", "hospital-b", "referral")
    yield w
    w.stop()


def seal_many(world, count: int, size: int = 1024) -> dict[str, tuple[envelope.SealedEnvelope, bytes]]:
    sender = world.agents["hospital-a"].exchange
    key, identity = sender.recipient_key("hospital-b"), sender._remote.identity()
    out = {}
    for _ in range(count):
        data = os.urandom(size)
        item = envelope.seal(data, "hospital-a", key, "referral", identity.key, chunk_size=64 * 1024)
        out[item.header.envelope_id] = (item, data)
    return out


def send(world, requests) -> list[exchange_pb2.EnvelopeReceipt]:
    return list(world.agents["hospital-a"].exchange._remote.send(requests))


def segments(world):
    return sorted((world.coordinator.layout.state / "exchange" / "segments").glob(f"*{SUFFIX}"))


def test_a_batch_is_stored_in_a_segment_audited_once_and_every_envelope_opens(world):
    sealed = seal_many(world, 300)
    big = seal_many(world, 1, size=100_000)  # above the whole-envelope size: sent in parts
    items = [s for s, _ in sealed.values()]
    requests = list(upload_requests([*items[:150], *(s for s, _ in big.values()), *items[150:]], batch_max=100))
    assert sum(len(r.envelopes) for r in requests) == 300 and len(requests) == 4 + 2  # the big one in 2 chunks
    before = world.coordinator.audit.head().seq
    receipts = send(world, requests)
    assert [r.envelope_id for r in receipts] == [*list(sealed)[:150], *big, *list(sealed)[150:]]
    assert not any(r.duplicate for r in receipts)
    assert segments(world)
    # One signed-chain entry per request of whole envelopes, naming every envelope in it.
    new = world.coordinator.audit.entries(after_seq=before)
    batches = [e for e in new if e.action == SEND_BATCH]
    assert [e.details["count"] for e in batches] == [100, 50, 100, 50]
    assert sorted(i for e in new for i in envelope_ids(e)) == sorted([*sealed, *big])
    assert world.coordinator.audit.verify() == world.coordinator.audit.head().hash
    # Retried whole: every one a duplicate, nothing stored twice.
    again = send(world, upload_requests(items[:10]))
    assert all(r.duplicate for r in again)
    waiting = {e["envelope_id"] for e in world.site("hospital-b").inbox()}
    assert set(sealed) <= waiting
    for envelope_id in [*list(sealed)[:3], *big]:
        got = world.site("hospital-b").receive(envelope_id)
        expected = sealed[envelope_id][1] if envelope_id in sealed else big[envelope_id][1]
        assert open(got["path"], "rb").read() == expected


def test_a_refused_envelope_ends_the_batch_and_those_before_it_are_kept(world):
    sealed = seal_many(world, 6)
    items = [s for s, _ in sealed.values()]
    forged = dataclasses.replace(items[3], header=dataclasses.replace(items[3].header, sender="hospital-b"))
    request = exchange_pb2.SendEnvelopesRequest(envelopes=[whole_to_proto(i) for i in [*items[:3], forged, items[4]]])
    receipts: list[str] = []
    with pytest.raises(errors.PermissionDenied, match="in the name of 'hospital-b'"):
        for r in world.agents["hospital-a"].exchange._remote.send([request]):
            receipts.append(r.envelope_id)
    assert receipts == list(sealed)[:3]
    waiting = {e["envelope_id"] for e in world.site("hospital-b").inbox()}
    assert set(list(sealed)[:3]) <= waiting and not set(list(sealed)[3:]) & waiting
    # A whole envelope whose ciphertext does not match its header is refused too.
    short = exchange_pb2.WholeEnvelope()
    short.CopyFrom(whole_to_proto(items[5]))
    short.ciphertext = short.ciphertext[:-1]
    with pytest.raises(errors.InvalidArgument, match="its header declares"):
        send(world, [exchange_pb2.SendEnvelopesRequest(envelopes=[short])])
    # Whole envelopes cannot be mixed into an envelope sent in parts.
    mixed = exchange_pb2.SendEnvelopesRequest(envelopes=[whole_to_proto(items[5])], signature=b"x")
    with pytest.raises(errors.InvalidArgument, match="travel alone"):
        send(world, [mixed])


def test_a_batch_mixing_new_stored_and_repeated_envelopes_stores_each_new_one_once(world):
    # The committer inserts a batch assuming no resends; one taken id sends it back to
    # sort the batch envelope by envelope, with nothing half-stored.
    old, fresh = seal_many(world, 5), seal_many(world, 6)
    send(world, upload_requests([s for s, _ in old.values()]))
    fresh_items = [s for s, _ in fresh.values()]
    mixed = [*fresh_items[:3], *(s for s, _ in old.values()), fresh_items[0], *fresh_items[3:]]
    before = world.coordinator.audit.head().seq
    receipts = send(world, upload_requests(mixed))
    assert [r.envelope_id for r in receipts] == [s.header.envelope_id for s in mixed]
    assert [r.duplicate for r in receipts] == [False] * 3 + [True] * 6 + [False] * 3
    new = world.coordinator.audit.entries(after_seq=before)
    assert sorted(i for e in new for i in envelope_ids(e)) == sorted(fresh)
    for envelope_id in [*fresh, *old]:
        got = world.site("hospital-b").receive(envelope_id)
        expected = fresh[envelope_id][1] if envelope_id in fresh else old[envelope_id][1]
        assert open(got["path"], "rb").read() == expected


def test_tampered_segment_bytes_are_refused_and_the_envelope_kept(world):
    sealed = seal_many(world, 20)
    send(world, upload_requests([s for s, _ in sealed.values()]))
    target = list(sealed)[7]
    record = world.coordinator.exchange._store.get_envelope(target)  # type: ignore[attr-defined]
    path = world.coordinator.exchange._segments.path(record.segment)  # type: ignore[attr-defined]
    at = record.segment_offset + record.sealed_key_size + 5
    original = path.read_bytes()
    path.write_bytes(original[:at] + bytes([original[at] ^ 1]) + original[at + 1 :])
    with pytest.raises(errors.PermissionDenied, match="tampered"):
        world.site("hospital-b").receive(target)
    assert target in {e["envelope_id"] for e in world.site("hospital-b").inbox()}
    path.write_bytes(original)
    assert open(world.site("hospital-b").receive(target)["path"], "rb").read() == sealed[target][1]


def test_sparse_segments_move_into_rows_and_delivered_ones_are_deleted(world):
    broker = world.coordinator.exchange  # type: ignore[attr-defined]
    broker._segments._max_bytes = 1  # every commit starts a new segment
    first, second = seal_many(world, 10), seal_many(world, 10)
    send(world, upload_requests([s for s, _ in first.values()]))
    send(world, upload_requests([s for s, _ in second.values()]))  # closes the first's segment
    numbers = {broker._store.get_envelope(i).segment for i in [*first, *second]}
    assert len(numbers) == 2
    first_segment = broker._segments.path(min(numbers))
    keep = list(first)[0]
    for envelope_id in list(first)[1:]:
        world.site("hospital-b").receive(envelope_id)
    # One envelope is still pending in it: compaction moves it into its row (the world's
    # periodic sweeper may already have done so).
    assert broker.compact_segments() in (0, 1)
    assert not first_segment.exists()
    assert broker._store.get_envelope(keep).segment is None
    assert open(world.site("hospital-b").receive(keep)["path"], "rb").read() == first[keep][1]
    # Once every envelope of a closed segment is delivered, the file goes.
    third = seal_many(world, 1)
    send(world, upload_requests([s for s, _ in third.values()]))
    second_segment = broker._segments.path(max(numbers))
    for envelope_id in second:
        world.site("hospital-b").receive(envelope_id)
    support.wait_for(lambda: not second_segment.exists(), 5, "the delivered segment to go")


@pytest.mark.parametrize("chunk_size", [0, 1, 2**31])
def test_a_whole_envelope_with_a_bad_chunk_size_is_invalid_not_internal(world, chunk_size):
    # Issue 15 item 3: chunk_size 0 divided by zero before the header was checked (INTERNAL).
    (item, _), *_ = seal_many(world, 1).values()
    bad = whole_to_proto(item)
    bad.header.chunk_size = chunk_size
    with pytest.raises(errors.InvalidArgument, match="chunk size must be"):
        send(world, [exchange_pb2.SendEnvelopesRequest(envelopes=[bad])])
    # Sent in parts, the same header is refused the same way.
    parts = exchange_pb2.SendEnvelopesRequest(
        header=bad.header, sealed_key=bad.sealed_key, chunks=[bad.ciphertext], signature=bad.signature
    )
    with pytest.raises(errors.InvalidArgument, match="chunk size must be"):
        send(world, [parts])
