"""Sealing and opening envelopes: both suites round-trip, and every kind of tampering,
truncation, reordering, wrong key or wrong signer is refused."""

import dataclasses

import pytest

from silolink import envelope, errors, pki


@pytest.fixture(scope="module")
def parties():
    sender_key, other_key = pki.generate_key(), pki.generate_key()
    pairs = {suite: envelope.KeyPair.generate(suite) for suite in envelope.SUITES}
    published = {s: envelope.PublishedKey("site-b", s, p.key_id, p.public_bytes, 1) for s, p in pairs.items()}
    return sender_key, other_key, pairs, published


@pytest.mark.parametrize("suite", list(envelope.SUITES))
@pytest.mark.parametrize("size", [0, 1, 4096, 10_000])
def test_round_trip(parties, suite, size):
    sender_key, _, pairs, published = parties
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sealed = envelope.seal(data, "site-a", published[suite], "referral", sender_key, filename="a.csv", chunk_size=4096)
    assert len(sealed.chunks) == max(1, -(-size // 4096))
    assert envelope.open_all(sealed, pairs[suite], sender_key.public_key()) == data
    assert envelope.Opener(sealed.header, sealed.sealed_key, pairs[suite]).filename == "a.csv"


def sealed_one(parties, data=b"y" * 10_000):
    sender_key, _, pairs, published = parties
    sealed = envelope.seal(data, "site-a", published[envelope.HYBRID], "referral", sender_key, chunk_size=4096)
    return sealed, pairs[envelope.HYBRID], sender_key.public_key()


def test_a_changed_header_does_not_open(parties):
    sealed, key, pub = sealed_one(parties)
    for change in ({"purpose": "research"}, {"sender": "site-x"}, {"ttl_s": 99999}):
        header = dataclasses.replace(sealed.header, **change)
        with pytest.raises(errors.PermissionDenied, match="tampered"):
            envelope.open_all(dataclasses.replace(sealed, header=header), key, pub)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda cs: [bytes([cs[0][0] ^ 1]) + cs[0][1:], *cs[1:]],  # flipped bit
        lambda cs: [cs[1], cs[0], *cs[2:]],  # reordered
        lambda cs: cs[:-1],  # truncated
    ],
)
def test_tampered_chunks_are_refused(parties, mangle):
    sealed, key, pub = sealed_one(parties)
    with pytest.raises(errors.PermissionDenied):
        envelope.open_all(dataclasses.replace(sealed, chunks=mangle(sealed.chunks)), key, pub)


def test_the_wrong_key_or_the_wrong_signer_is_refused(parties):
    sealed, key, pub = sealed_one(parties)
    with pytest.raises(errors.FailedPrecondition, match="different key"):
        envelope.open_all(sealed, envelope.KeyPair.generate(), pub)
    with pytest.raises(errors.PermissionDenied, match="not signed by site site-a"):
        envelope.open_all(sealed, key, parties[1].public_key())


def test_published_keys_verify_only_with_their_sites_key(parties):
    sender_key, other_key, pairs, _ = parties
    pair = pairs[envelope.CLASSIC]
    key = envelope.PublishedKey("site-b", pair.suite, pair.key_id, pair.public_bytes, 5).signed(sender_key)
    key.verify(sender_key.public_key())
    with pytest.raises(errors.InvalidArgument, match="not signed"):
        key.verify(other_key.public_key())
    with pytest.raises(errors.InvalidArgument, match="does not match"):
        dataclasses.replace(key, key_id="0" * 32).verify(sender_key.public_key())


def test_malformed_headers_are_refused(parties):
    sealed, _, _ = sealed_one(parties)
    for change, message in (
        ({"envelope_id": "not-a-uuid"}, "UUID"),
        ({"purpose": "Bad Purpose"}, "purpose"),
        ({"suite": "RSA"}, "suite"),
        ({"chunk_size": 10}, "chunk size"),
    ):
        with pytest.raises(errors.InvalidArgument, match=message):
            dataclasses.replace(sealed.header, **change).check()
