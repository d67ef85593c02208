"""Sealed envelopes: what a site sends another through the coordinator, which cannot read it.

The construction composes standard primitives; it is not a new cipher:

* **Key wrap (RFC 9180 HPKE, base mode).** The sender draws a random AES-256 content key
  and seals ``content key || file name`` to the recipient's published HPKE key. HPKE's
  ``info`` is ``INFO_PREFIX || canonical header``, so the wrapped key opens only for the
  exact header it was sealed with (recipient, purpose, sizes, expiry...). Default suite:
  hybrid ML-KEM-768 + X25519 (safe against a future quantum computer recording today's
  traffic); X25519 alone for peers that need it. KDF HKDF-SHA256, AEAD AES-256-GCM.
* **Payload (AES-256-GCM in chunks).** The payload is cut into ``chunk_size`` pieces;
  chunk ``i`` is sealed under the content key with nonce ``i`` (96-bit big-endian; the key
  is fresh per envelope, so nonces never repeat) and associated data
  ``sha256(header) || i || final``, so chunks cannot be moved between envelopes,
  reordered, dropped or truncated (the STREAM construction of Hoang et al.).
* **Origin (ECDSA P-256 with the sender's site key).** The sender signs the header, a
  digest of the wrapped key and a digest of every chunk's GCM tag. The tags are MACs under
  a key only sender and recipient hold, so nobody else (the coordinator included) can swap
  ciphertext under a valid signature; hashing the tags instead of the whole ciphertext
  keeps sealing at AES speed. The recipient checks the sender's certificate against the CA
  it pinned at enrollment.

This module does crypto only: no storage, no gRPC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from silolink import errors

INFO_PREFIX = b"silolink envelope v1\x00"
SIGNATURE_PREFIX = b"silolink envelope signature v1\x00"
KEY_SIGNATURE_PREFIX = b"silolink site key v1\x00"
TAG_BYTES = 16
CONTENT_KEY_BYTES = 32
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
MAX_FILENAME_BYTES = 255
PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")

# Suite names as they appear in headers and published keys.
HYBRID = "MLKEM768_X25519"
CLASSIC = "X25519"
SUITES = {HYBRID: hpke.KEM.MLKEM768_X25519, CLASSIC: hpke.KEM.X25519}
DEFAULT_SUITE = HYBRID
_MLKEM_SEED_BYTES = 64
_MLKEM_PUBLIC_BYTES = 1184
_X25519_BYTES = 32


def validate_purpose(purpose: str) -> str:
    if not PURPOSE_RE.match(purpose or ""):
        raise errors.InvalidArgument(
            f"invalid purpose {purpose!r}: use 1 to 63 lower-case letters, digits, dots, dashes and underscores"
        )
    return purpose


def _suite(name: str) -> hpke.Suite:
    kem = SUITES.get(name)
    if kem is None:
        raise errors.InvalidArgument(f"unknown exchange suite {name!r}; use {HYBRID} or {CLASSIC}")
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


# -- site keys ---------------------------------------------------------------------------


def key_id(suite: str, public_bytes: bytes) -> str:
    """A key's id: a digest of its suite and public bytes (32 hex digits)."""
    return hashlib.sha256(suite.encode() + b"\x00" + public_bytes).hexdigest()[:32]


def load_public_key(suite: str, data: bytes):
    """An HPKE public key from its published bytes (InvalidArgument if malformed)."""
    try:
        if suite == HYBRID:
            if len(data) != _MLKEM_PUBLIC_BYTES + _X25519_BYTES:
                raise ValueError("wrong length")
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM_PUBLIC_BYTES]),
                x25519.X25519PublicKey.from_public_bytes(data[_MLKEM_PUBLIC_BYTES:]),
            )
        if suite == CLASSIC:
            return x25519.X25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise errors.InvalidArgument(f"the {suite} public key is malformed") from None
    raise errors.InvalidArgument(f"unknown exchange suite {suite!r}; use {HYBRID} or {CLASSIC}")


@dataclass(frozen=True)
class KeyPair:
    """A site's HPKE key pair. ``private_bytes`` is secret and never leaves the site."""

    suite: str
    private_bytes: bytes
    public_bytes: bytes

    @classmethod
    def generate(cls, suite: str = DEFAULT_SUITE) -> KeyPair:
        _suite(suite)
        x = x25519.X25519PrivateKey.generate()
        x_pub = x.public_key().public_bytes_raw()
        if suite == CLASSIC:
            return cls(suite, x.private_bytes_raw(), x_pub)
        m = mlkem.MLKEM768PrivateKey.generate()
        return cls(suite, m.private_bytes_raw() + x.private_bytes_raw(), m.public_key().public_bytes_raw() + x_pub)

    @property
    def key_id(self) -> str:
        return key_id(self.suite, self.public_bytes)

    def private_key(self):
        if self.suite == CLASSIC:
            return x25519.X25519PrivateKey.from_private_bytes(self.private_bytes)
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(self.private_bytes[:_MLKEM_SEED_BYTES]),
            x25519.X25519PrivateKey.from_private_bytes(self.private_bytes[_MLKEM_SEED_BYTES:]),
        )


@dataclass(frozen=True)
class PublishedKey:
    """A site's public key as published, bound to the site by its identity-key signature."""

    site: str
    suite: str
    key_id: str
    public_bytes: bytes
    created_at_ms: int
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        body = json.dumps(
            {"site": self.site, "suite": self.suite, "key_id": self.key_id, "created_at_ms": self.created_at_ms},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return KEY_SIGNATURE_PREFIX + body + b"\x00" + self.public_bytes

    def signed(self, identity_key: ec.EllipticCurvePrivateKey) -> PublishedKey:
        return dataclasses.replace(self, signature=identity_key.sign(self.signed_bytes(), ec.ECDSA(hashes.SHA256())))

    def verify(self, identity_public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise InvalidArgument unless the key is well formed and signed by ``identity_public_key``."""
        load_public_key(self.suite, self.public_bytes)
        if key_id(self.suite, self.public_bytes) != self.key_id:
            raise errors.InvalidArgument("the published key's id does not match its bytes")
        try:
            identity_public_key.verify(self.signature, self.signed_bytes(), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise errors.InvalidArgument(
                f"the exchange key of site {self.site} is not signed by that site's certificate key"
            ) from None


# -- envelopes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What the coordinator may know about an envelope; bound into every cryptographic step."""

    envelope_id: str
    sender: str
    recipient: str
    purpose: str
    recipient_key_id: str
    suite: str
    created_at_ms: int
    ttl_s: int
    payload_size: int
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @classmethod
    def new(
        cls,
        sender: str,
        recipient: str,
        purpose: str,
        key: PublishedKey,
        payload_size: int,
        ttl_s: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        now: float | None = None,
    ) -> Header:
        return cls(
            envelope_id=str(uuid.uuid4()),
            sender=sender,
            recipient=recipient,
            purpose=purpose,
            recipient_key_id=key.key_id,
            suite=key.suite,
            created_at_ms=int((time.time() if now is None else now) * 1000),
            ttl_s=ttl_s,
            payload_size=payload_size,
            chunk_size=chunk_size,
        )

    def check(self) -> None:
        """Raise InvalidArgument if the header is not well formed."""
        self.check_route()
        self.check_own()

    def check_route(self) -> None:
        """The fields an envelope shares with others to the same recipient, purpose and key
        (the broker checks them once per such route in a request)."""
        validate_purpose(self.purpose)
        if self.suite not in SUITES:
            _suite(self.suite)  # raises, naming the suites there are
        if not _KEY_ID.fullmatch(self.recipient_key_id):
            raise errors.InvalidArgument("the recipient key id is malformed")

    def check_own(self) -> None:
        """The fields that are the envelope's own."""
        # Checked for every envelope the broker accepts, so plain pattern and set look-ups
        # (the same rules as uuid.UUID's canonical form and _suite, at a fraction of the cost).
        if not _CANONICAL_UUID.fullmatch(self.envelope_id):
            raise errors.InvalidArgument("the envelope id must be a UUID in canonical form")
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise errors.InvalidArgument(f"the chunk size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
        if self.payload_size < 0 or self.ttl_s <= 0 or self.created_at_ms <= 0:
            raise errors.InvalidArgument("the envelope's size, ttl and creation time must be positive")

    @property
    def chunk_count(self) -> int:
        # An empty payload still has one (empty) final chunk, so truncation is detectable.
        return -(-self.payload_size // self.chunk_size) or 1

    def chunk_plain_size(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.payload_size - self.chunk_size * (self.chunk_count - 1)

    @property
    def ciphertext_size(self) -> int:
        return self.payload_size + TAG_BYTES * self.chunk_count

    @property
    def expires_at(self) -> float:
        return self.created_at_ms / 1000 + self.ttl_s

    def canonical(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _signed_message(header: Header, sealed_key: bytes, tags_digest: bytes) -> bytes:
    return SIGNATURE_PREFIX + header.canonical() + hashlib.sha256(sealed_key).digest() + tags_digest


class Sealer:
    """Seals one envelope chunk by chunk: ``sealed_key``, then ``seal(i, data)`` for each
    chunk in order, then ``finish()`` for the signature."""

    def __init__(
        self, header: Header, recipient: PublishedKey, signing_key: ec.EllipticCurvePrivateKey, filename: str = ""
    ) -> None:
        header.check()
        if recipient.key_id != header.recipient_key_id or recipient.suite != header.suite:
            raise errors.InvalidArgument("the header does not name the recipient key it is sealed to")
        name = filename.encode()
        if len(name) > MAX_FILENAME_BYTES:
            raise errors.InvalidArgument(f"the file name is longer than {MAX_FILENAME_BYTES} bytes")
        self.header = header
        content_key = os.urandom(CONTENT_KEY_BYTES)
        self.sealed_key = _suite(header.suite).encrypt(
            content_key + name,
            load_public_key(recipient.suite, recipient.public_bytes),
            INFO_PREFIX + header.canonical(),
        )
        self._aead = AESGCM(content_key)
        self._digest = header.digest()
        self._tags = hashlib.sha256()
        self._next = 0
        self._signing_key = signing_key

    def seal(self, index: int, plaintext: bytes | memoryview) -> bytes:
        if index != self._next or index >= self.header.chunk_count:
            raise errors.InvalidArgument(f"chunk {index} sealed out of order")
        if len(plaintext) != self.header.chunk_plain_size(index):
            raise errors.InvalidArgument(f"chunk {index} has {len(plaintext)} bytes, the header says otherwise")
        final = index == self.header.chunk_count - 1
        ciphertext = self._aead.encrypt(_nonce(index), plaintext, _aad(self._digest, index, final))
        self._tags.update(ciphertext[-TAG_BYTES:])
        self._next += 1
        return ciphertext

    def finish(self) -> bytes:
        if self._next != self.header.chunk_count:
            raise errors.InvalidArgument("not every chunk was sealed")
        message = _signed_message(self.header, self.sealed_key, self._tags.digest())
        return self._signing_key.sign(message, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class SealedEnvelope:
    header: Header
    sealed_key: bytes
    chunks: list[bytes]
    signature: bytes


def chunks_of(data: bytes | memoryview, header: Header) -> Iterator[memoryview]:
    view = memoryview(data)
    for i in range(header.chunk_count):
        yield view[i * header.chunk_size : i * header.chunk_size + header.chunk_plain_size(i)]


def seal(
    data: bytes,
    sender: str,
    recipient: PublishedKey,
    purpose: str,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    ttl_s: int = 24 * 3600,
    filename: str = "",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedEnvelope:
    """Seal ``data`` in memory (small payloads, tests, benchmarks)."""
    header = Header.new(sender, recipient.site, purpose, recipient, len(data), ttl_s, chunk_size)
    sealer = Sealer(header, recipient, signing_key, filename)
    chunks = [sealer.seal(i, c) for i, c in enumerate(chunks_of(data, header))]
    return SealedEnvelope(header, sealer.sealed_key, chunks, sealer.finish())


class Opener:
    """Opens one envelope chunk by chunk. Plaintext from ``open`` must not be trusted (or
    released) until ``finish`` has checked the sender's signature."""

    def __init__(self, header: Header, sealed_key: bytes, key: KeyPair) -> None:
        header.check()
        if key.key_id != header.recipient_key_id or key.suite != header.suite:
            raise errors.FailedPrecondition("the envelope was sealed to a different key of this site")
        try:
            blob = _suite(header.suite).decrypt(sealed_key, key.private_key(), INFO_PREFIX + header.canonical())
        except (InvalidTag, ValueError):
            raise errors.PermissionDenied(
                "the envelope's key does not open: its header or wrapped key was tampered with"
            ) from None
        if len(blob) < CONTENT_KEY_BYTES:
            raise errors.PermissionDenied("the envelope's wrapped key is malformed")
        self.header = header
        self.sealed_key = sealed_key
        self.filename = blob[CONTENT_KEY_BYTES:].decode(errors="replace")
        self._aead = AESGCM(blob[:CONTENT_KEY_BYTES])
        self._digest = header.digest()
        self._tags = hashlib.sha256()
        self._next = 0

    def open(self, index: int, ciphertext: bytes | memoryview) -> bytes:
        if index != self._next or index >= self.header.chunk_count:
            raise errors.PermissionDenied(f"chunk {index} arrived out of order")
        final = index == self.header.chunk_count - 1
        try:
            plaintext = self._aead.decrypt(_nonce(index), ciphertext, _aad(self._digest, index, final))
        except InvalidTag:
            raise errors.PermissionDenied(f"chunk {index} of the envelope was tampered with") from None
        self._tags.update(bytes(ciphertext[-TAG_BYTES:]))
        self._next += 1
        return plaintext

    def finish(self, signature: bytes, sender_public_key: ec.EllipticCurvePublicKey) -> None:
        if self._next != self.header.chunk_count:
            raise errors.PermissionDenied("the envelope is truncated: chunks are missing")
        message = _signed_message(self.header, self.sealed_key, self._tags.digest())
        try:
            sender_public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise errors.PermissionDenied(
                f"the envelope is not signed by site {self.header.sender}: its signature does not verify"
            ) from None


def open_all(envelope: SealedEnvelope, key: KeyPair, sender_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Open an in-memory envelope (tests, benchmarks)."""
    opener = Opener(envelope.header, envelope.sealed_key, key)
    data = b"".join(opener.open(i, c) for i, c in enumerate(envelope.chunks))
    opener.finish(envelope.signature, sender_public_key)
    return data


def split_ciphertext(header: Header, blobs: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a stream of ciphertext bytes into the envelope's chunks."""
    buffer = bytearray()
    index = 0
    for blob in blobs:
        buffer += blob
        while index < header.chunk_count and len(buffer) >= header.chunk_plain_size(index) + TAG_BYTES:
            size = header.chunk_plain_size(index) + TAG_BYTES
            yield bytes(buffer[:size])
            del buffer[:size]
            index += 1
    if buffer or index != header.chunk_count:
        raise errors.PermissionDenied("the envelope's ciphertext does not match its header's size")
