"""Secure aggregation by pairwise additive masking (Bonawitz et al. 2017, without dropout
recovery), built only from ``cryptography``'s primitives.

Round 1: each site makes an ephemeral X25519 key for the query and signs it, together with
the query's transcript (its id, the query, every participant), with its identity key
(ECDSA P-256). Round 2: each site checks every other participant's signature against a
certificate that chains to the CA it pinned at enrollment and names that participant,
derives one seed per pair (X25519, then HKDF-SHA256 bound to the query id, the query and the
pair's names), expands it with ChaCha20 into a mask vector, and sends its values plus the
masks it shares with later-named sites minus those it shares with earlier-named ones, modulo
2^64. Each pair's masks appear once with each sign, so they cancel in the sum; each single
contribution is uniformly random to anyone without one of the pair's private keys.

The coordinator relays keys but is also the CA. A coordinator that runs honestly but is
curious learns only the total; one that issues itself a false site certificate could stand
in for a site in the key exchange. The signatures stop anyone else doing that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from silolink import errors, pki
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.identity import Role

from .query import MODULUS, to_ring

SETUP_LABEL = b"silolink/analytics/v1/setup"
MASK_LABEL = b"silolink/analytics/v1/mask"
PUBLIC_KEY_BYTES = 32


def _frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation, so no two different field lists encode alike."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def query_digest(query: pb.Query) -> bytes:
    return hashlib.sha256(query.SerializeToString(deterministic=True)).digest()


def transcript(query_id: str, query: pb.Query, participants: Sequence[str], site: str, public_key: bytes) -> bytes:
    """What a site signs in round 1: this key, for this site, in this query among these sites."""
    return _frame(
        SETUP_LABEL,
        query_id.encode(),
        query_digest(query),
        _frame(*(p.encode() for p in sorted(participants))),
        site.encode(),
        public_key,
    )


def new_key() -> tuple[X25519PrivateKey, bytes]:
    key = X25519PrivateKey.generate()
    return key, key.public_key().public_bytes_raw()


def sign(identity_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return identity_key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_peer(
    peer: pb.PeerKey,
    ca_cert: x509.Certificate,
    query_id: str,
    query: pb.Query,
    participants: Sequence[str],
    now: dt.datetime | None = None,
) -> None:
    """Raise PermissionDenied unless ``peer``'s key is signed by a valid certificate for its site."""
    who = f"site {peer.site}"
    try:
        cert = x509.load_pem_x509_certificate(peer.certificate_pem)
    except ValueError:
        raise errors.PermissionDenied(f"{who}'s certificate for this query is not a PEM certificate") from None
    if not pki.issued_by(cert, ca_cert):
        raise errors.PermissionDenied(f"{who}'s certificate was not issued by the CA this site pinned at enrollment")
    now = now or pki.utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise errors.PermissionDenied(f"{who}'s certificate is not valid now")
    identity = pki.identity_of(cert)
    if identity is None or identity.role is not Role.AGENT or identity.name != peer.site:
        raise errors.PermissionDenied(f"the certificate relayed for {who} names another holder")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(peer.public_key) != PUBLIC_KEY_BYTES:
        raise errors.PermissionDenied(f"{who}'s key or certificate has the wrong form")
    message = transcript(query_id, query, participants, peer.site, peer.public_key)
    try:
        key.verify(peer.signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise errors.PermissionDenied(
            f"{who}'s key does not carry its valid signature for this query; it was altered on the way"
        ) from None


def pair_mask(
    own_key: X25519PrivateKey,
    own_site: str,
    peer_site: str,
    peer_public: bytes,
    query_id: str,
    query: pb.Query,
    length: int,
) -> list[int]:
    """The mask vector ``own_site`` and ``peer_site`` share for this query (the same at both)."""
    try:
        shared = own_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise errors.PermissionDenied(f"site {peer_site}'s key for this query is not a usable X25519 key") from None
    first, second = sorted((own_site, peer_site))
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=query_id.encode(),
        info=_frame(MASK_LABEL, query_digest(query), first.encode(), second.encode(), length.to_bytes(4, "big")),
    ).derive(shared)
    # The seed is used for this one stream only, so a fixed nonce (and counter 0) is safe.
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(8 * length))
    return [int.from_bytes(stream[i : i + 8], "little") for i in range(0, len(stream), 8)]


def mask(
    values: Sequence[int],
    own_key: X25519PrivateKey,
    own_site: str,
    peers: Sequence[pb.PeerKey],
    query_id: str,
    query: pb.Query,
) -> list[int]:
    """``values`` plus this site's share of every pairwise mask, modulo 2^64."""
    out = to_ring(values)
    for peer in peers:
        if peer.site == own_site:
            continue
        shared = pair_mask(own_key, own_site, peer.site, peer.public_key, query_id, query, len(out))
        sign_ = 1 if own_site < peer.site else -1
        out = [(o + sign_ * m) % MODULUS for o, m in zip(out, shared, strict=True)]
    return out


def aggregate(vectors: Sequence[Sequence[int]]) -> list[int]:
    """The element-wise sum modulo 2^64: the masks cancel, the total remains."""
    total = [0] * len(vectors[0])
    for vector in vectors:
        total = [(t + v) % MODULUS for t, v in zip(total, vector, strict=True)]
    return total
