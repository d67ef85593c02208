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

Sparse masking (SecAgg+, Bell et al. 2020) for large federations: with every pair masked,
each site would receive and check every other site's key, N^2 work and traffic. Instead
the coordinator sends every site the same round-1 command, naming the participants only by
their count and a digest of their sorted names, and each site signs its key bound to that
digest. The sites are then placed on a ring in an order drawn from a hash of the query id
and the digest, and each pairs only with its ``mask_degree(n)`` nearest neighbours (half
on each side): round 2 sends each site just those keys. Every mask still appears once with
each sign, so the total is exact. What the coordinator learns: with no site colluding,
only the total (the masks of a connected graph hide every partial sum). Sites colluding
with it reveal a partial sum only if they cut the ring, which takes two runs of
``degree/2`` consecutive colluders around a run of honest sites; the degree is the least
that makes that chance at most 2^-20 for any ring size when up to a third of the sites,
placed at random, collude (n * 3^(-degree/2) <= 2^-10, squared for the two runs). Up to
``degree + 1`` sites every pair is masked, as before. The ring order is random only if the
coordinator draws the query id honestly; one that chose ids to place colluders deviates
from the protocol, which (as with forging a certificate) is outside the honest-but-curious
model this module protects against. Each site checks that it got exactly its degree of
distinct neighbours, each signed for the same participants, so the coordinator cannot
quietly thin a site's masks.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

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
SPARSE_SETUP_LABEL = b"silolink/analytics/v1/setup-sparse"
RING_LABEL = b"silolink/analytics/v1/ring"
# The colluding share the masking graph is sized against, and the bound (2^-bits) on one
# run of degree/2 colluders anywhere on the ring (two runs are needed to cut it).
COLLUDING_SHARE = 1 / 3
RUN_BOUND_BITS = 10
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


def participants_digest(participants: Sequence[str]) -> bytes:
    """SHA-256 of the sorted participant names, framed: the set every site's key is bound to."""
    return hashlib.sha256(_frame(*(p.encode() for p in sorted(participants)))).digest()


def sparse_transcript(query_id: str, query: pb.Query, digest: bytes, count: int, site: str, public_key: bytes) -> bytes:
    """What a site signs in round 1 of a sparse query: this key, for this site, in this query
    among the ``count`` sites whose sorted names hash to ``digest``."""
    return _frame(
        SPARSE_SETUP_LABEL, query_id.encode(), query_digest(query), digest, count.to_bytes(4, "big"), site.encode(),
        public_key,
    )  # fmt: skip


def mask_degree(count: int) -> int:
    """How many neighbours each of ``count`` sites masks with (every other site when few)."""
    if count < 2:
        return 0
    half = math.ceil((math.log2(count) + RUN_BOUND_BITS) / math.log2(1 / COLLUDING_SHARE))
    return min(count - 1, 2 * half)


def neighbours(participants: Sequence[str], query_id: str, digest: bytes) -> dict[str, list[str]]:
    """Each participant's neighbours on the query's ring (see the module's docstring)."""
    count = len(participants)
    degree = mask_degree(count)
    if degree >= count - 1:
        return {p: [q for q in participants if q != p] for p in participants}
    seed = hashlib.sha256(_frame(RING_LABEL, query_id.encode(), digest)).digest()
    ring = sorted(participants, key=lambda p: hashlib.sha256(seed + p.encode()).digest())
    half = degree // 2
    return {
        site: [ring[(i + d) % count] for d in range(-half, half + 1) if d]
        for i, site in enumerate(ring)
    }  # fmt: skip


@dataclass(frozen=True)
class Participants:
    """Who takes part in a query, as a site learns it in round 1: by count and digest
    (sparse masking), or by name from a coordinator that predates it (every pair masked)."""

    count: int
    digest: bytes
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, command: pb.AnalyticsSetupCommand) -> Participants:
        if command.sites:
            names = tuple(command.sites)
            return cls(len(names), participants_digest(names), names)
        return cls(command.participant_count, bytes(command.participants_digest))

    def check(self, site: str, max_sites: int) -> None:
        """InvalidArgument unless the set is well formed (and names ``site``, when named)."""
        if self.names:
            if site not in self.names:
                raise errors.InvalidArgument(f"the query's participants do not include this site ({site})")
            if len(set(self.names)) != len(self.names):
                raise errors.InvalidArgument("the query's participants repeat a site")
        elif len(self.digest) != hashlib.sha256().digest_size:
            raise errors.InvalidArgument("the query names its participants by neither names nor digest")
        if not 1 <= self.count <= max_sites:
            raise errors.InvalidArgument(f"the query has {self.count} participants; a site takes 1 to {max_sites}")

    def transcript(self, query_id: str, query: pb.Query, site: str, public_key: bytes) -> bytes:
        if self.names:
            return transcript(query_id, query, self.names, site, public_key)
        return sparse_transcript(query_id, query, self.digest, self.count, site, public_key)

    def verify(self, peer: pb.PeerKey, ca_cert: x509.Certificate, query_id: str, query: pb.Query) -> None:
        if self.names:
            verify_peer(peer, ca_cert, query_id, query, self.names)
        else:
            verify_sparse_peer(peer, ca_cert, query_id, query, self.digest, self.count)

    def check_peers(self, site: str, peers: Sequence[pb.PeerKey]) -> None:
        """PermissionDenied unless ``peers`` are this site's own key plus exactly its share
        of neighbours (all others, or ``mask_degree`` distinct ones)."""
        names = [p.site for p in peers]
        if self.names:
            if sorted(names) != sorted(self.names):
                raise errors.PermissionDenied("the keys relayed for this query are not those of its participants")
            return
        others = [n for n in names if n != site]
        if names.count(site) != 1 or len(set(others)) != len(others) or len(others) != mask_degree(self.count):
            raise errors.PermissionDenied(
                f"the keys relayed for this query are not this site's own and {mask_degree(self.count)} distinct "
                f"neighbours of a query across {self.count} sites"
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
    _verify(peer, ca_cert, transcript(query_id, query, participants, peer.site, peer.public_key), now)


def verify_sparse_peer(
    peer: pb.PeerKey,
    ca_cert: x509.Certificate,
    query_id: str,
    query: pb.Query,
    digest: bytes,
    count: int,
    now: dt.datetime | None = None,
) -> None:
    """As ``verify_peer``, for a key signed for a sparse query's participants."""
    _verify(peer, ca_cert, sparse_transcript(query_id, query, digest, count, peer.site, peer.public_key), now)


@functools.lru_cache(maxsize=16384)
def _certificate(pem: bytes, ca_pem: bytes) -> tuple[x509.Certificate, str]:
    """A peer certificate checked against the CA (cached: the same peers come back query
    after query); the error to raise, or "" when it is one the CA issued."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None, "'s certificate for this query is not a PEM certificate"  # type: ignore[return-value]
    ca = x509.load_pem_x509_certificate(ca_pem)
    if not pki.issued_by(cert, ca):
        return cert, "'s certificate was not issued by the CA this site pinned at enrollment"
    return cert, ""


def _verify(peer: pb.PeerKey, ca_cert: x509.Certificate, message: bytes, now: dt.datetime | None) -> None:
    who = f"site {peer.site}"
    cert, problem = _certificate(bytes(peer.certificate_pem), pki.cert_to_pem(ca_cert))
    if problem:
        raise errors.PermissionDenied(who + problem)
    now = now or pki.utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise errors.PermissionDenied(f"{who}'s certificate is not valid now")
    identity = pki.identity_of(cert)
    if identity is None or identity.role is not Role.AGENT or identity.name != peer.site:
        raise errors.PermissionDenied(f"the certificate relayed for {who} names another holder")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(peer.public_key) != PUBLIC_KEY_BYTES:
        raise errors.PermissionDenied(f"{who}'s key or certificate has the wrong form")
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
