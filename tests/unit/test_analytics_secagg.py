"""Pairwise masking: masks cancel, signatures bind keys to sites, and noise has the right spread."""

from __future__ import annotations

import datetime as dt
import random
import statistics

import pytest
from cryptography import x509

from edge_agent.analytics.noise import add_noise, discrete_laplace, scales
from silolink import errors, pki
from silolink.analytics import secagg
from silolink.analytics.query import build_query, from_ring
from silolink.config import AnalyticsConfig
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.identity import Role

SITES = ["hospital-a", "hospital-b", "hospital-c"]
QUERY = build_query("patients", "histogram radius --bins 0:30:3")
QID = "q" * 32


@pytest.fixture(scope="module")
def ca():
    return pki.CertificateAuthority.create("test CA", dt.timedelta(days=1))


def site_keys(ca, name):
    key = pki.generate_key()
    cert = ca.issue_client(key.public_key(), Role.AGENT, name, dt.timedelta(days=1))
    return key, pki.cert_to_pem(cert)


def round_one(ca, sites=SITES, query=QUERY):
    state, peers = {}, []
    for site in sites:
        identity_key, cert_pem = site_keys(ca, site)
        key, public = secagg.new_key()
        signature = secagg.sign(identity_key, secagg.transcript(QID, query, sites, site, public))
        state[site] = key
        peers.append(pb.PeerKey(site=site, public_key=public, signature=signature, certificate_pem=cert_pem))
    return state, peers


def test_masks_cancel_and_each_contribution_looks_random(ca):
    state, peers = round_one(ca)
    values = {"hospital-a": [1, 20, 3, 0, 9], "hospital-b": [0, 15, 40, 2, 0], "hospital-c": [5, -7, 0, 1, 1]}
    masked = {s: secagg.mask(values[s], state[s], s, peers, QID, QUERY) for s in SITES}
    for site in SITES:
        for peer in peers:
            if peer.site != site:
                secagg.verify_peer(peer, ca.cert, QID, QUERY, SITES)
        assert all(m >= 1 << 20 for m in masked[site])  # not the small values it hides
    total = secagg.aggregate(list(masked.values()))
    assert [from_ring(t) for t in total] == [6, 28, 43, 3, 10]
    # Without one site's contribution the rest is noise, not a partial total.
    partial = secagg.aggregate([masked["hospital-a"], masked["hospital-c"]])
    assert all(abs(from_ring(p)) > 1 << 20 for p in partial)


def test_masks_are_bound_to_the_query(ca):
    state, peers = round_one(ca)
    other = build_query("patients", "histogram radius --bins 0:30:3", where="age > 1")
    a = secagg.pair_mask(state["hospital-a"], "hospital-a", "hospital-b", peers[1].public_key, QID, QUERY, 4)
    b = secagg.pair_mask(state["hospital-b"], "hospital-b", "hospital-a", peers[0].public_key, QID, QUERY, 4)
    assert a == b
    assert a != secagg.pair_mask(state["hospital-a"], "hospital-a", "hospital-b", peers[1].public_key, "r" * 32,
                                 QUERY, 4)  # fmt: skip
    assert a != secagg.pair_mask(state["hospital-a"], "hospital-a", "hospital-b", peers[1].public_key, QID, other, 4)


def test_forged_or_misbound_keys_are_refused(ca):
    _, peers = round_one(ca)
    b = peers[1]
    swapped = pb.PeerKey()
    swapped.CopyFrom(b)
    swapped.public_key = secagg.new_key()[1]
    with pytest.raises(errors.PermissionDenied, match="altered on the way"):
        secagg.verify_peer(swapped, ca.cert, QID, QUERY, SITES)
    with pytest.raises(errors.PermissionDenied, match="altered"):  # another query, another participant list
        secagg.verify_peer(b, ca.cert, QID, QUERY, SITES[:2])
    impostor = pb.PeerKey()
    impostor.CopyFrom(b)
    impostor.site = "hospital-c"
    with pytest.raises(errors.PermissionDenied, match="names another holder"):
        secagg.verify_peer(impostor, ca.cert, QID, QUERY, SITES)
    rogue = pki.CertificateAuthority.create("rogue", dt.timedelta(days=1))
    _, rogue_peers = round_one(rogue)
    with pytest.raises(errors.PermissionDenied, match="not issued by the CA this site pinned"):
        secagg.verify_peer(rogue_peers[1], ca.cert, QID, QUERY, SITES)
    later = pki.utcnow() + dt.timedelta(days=2)
    with pytest.raises(errors.PermissionDenied, match="not valid now"):
        secagg.verify_peer(b, ca.cert, QID, QUERY, SITES, now=later)
    broken = pb.PeerKey()
    broken.CopyFrom(b)
    broken.public_key = bytes(32)
    with pytest.raises(errors.PermissionDenied):
        secagg.mask([1], secagg.new_key()[0], "hospital-a", [broken], QID, QUERY)
    assert x509.load_pem_x509_certificate(b.certificate_pem)


def test_the_sparse_masking_graph_is_small_symmetric_and_sized_to_the_bound():
    assert [secagg.mask_degree(n) for n in (2, 3, 10, 21, 22)] == [1, 2, 9, 20, 20]  # every pair up to 21
    for n in (100, 1000, 10_000, 1_000_000):
        degree = secagg.mask_degree(n)
        assert degree % 2 == 0 and degree < 50
        assert n * secagg.COLLUDING_SHARE ** (degree / 2) <= 2**-10  # one run of degree/2 colluders
    sites = [f"site-{i:04d}" for i in range(1000)]
    digest = secagg.participants_digest(sites)
    ring = secagg.neighbours(sites, QID, digest)
    degree = secagg.mask_degree(1000)
    assert all(len(set(ring[s])) == degree and s not in ring[s] for s in sites)
    assert all(s in ring[n] for s in sites for n in ring[s])  # each pair masks from both ends
    reached, frontier = {sites[0]}, [sites[0]]  # connected: the masks hide every partial sum
    while frontier:
        frontier = list({n for s in frontier for n in ring[s]} - reached)
        reached.update(frontier)
    assert len(reached) == 1000
    assert secagg.neighbours(sites, "r" * 32, digest) != ring  # each query draws its own ring


def sparse_round(ca, sites):
    digest = secagg.participants_digest(sites)
    participants = secagg.Participants(len(sites), digest)
    state, peers = {}, {}
    for site in sites:
        identity_key, cert_pem = site_keys(ca, site)
        key, public = secagg.new_key()
        signature = secagg.sign(identity_key, participants.transcript(QID, QUERY, site, public))
        state[site] = key
        peers[site] = pb.PeerKey(site=site, public_key=public, signature=signature, certificate_pem=cert_pem)
    ring = secagg.neighbours(sites, QID, digest)
    return participants, state, peers, {s: [peers[s], *(peers[n] for n in ring[s])] for s in sites}


def test_sparse_masks_cancel_over_a_large_federation(ca):
    sites = [f"site-{i:02d}" for i in range(60)]
    participants, state, _, relayed = sparse_round(ca, sites)
    assert secagg.mask_degree(60) < 59  # really sparse: each site sees a third of the others
    masked = []
    for site in sites:
        participants.check_peers(site, relayed[site])
        for peer in relayed[site][1:]:
            participants.verify(peer, ca.cert, QID, QUERY)
        masked.append(secagg.mask([1, sites.index(site)], state[site], site, relayed[site], QID, QUERY))
    assert all(m[0] > 1 << 20 for m in masked)
    assert [from_ring(t) for t in secagg.aggregate(masked)] == [60, sum(range(60))]


def test_a_site_refuses_thinned_or_rebound_neighbours(ca):
    sites = [f"site-{i:02d}" for i in range(60)]
    participants, _, peers, relayed = sparse_round(ca, sites)
    site = sites[0]
    with pytest.raises(errors.PermissionDenied, match="distinct neighbours"):
        participants.check_peers(site, relayed[site][:-1])  # one mask fewer than its degree
    with pytest.raises(errors.PermissionDenied, match="distinct neighbours"):
        participants.check_peers(site, [*relayed[site][:-1], relayed[site][1]])  # a neighbour twice
    # A key signed for another set of participants does not verify for this one.
    other = secagg.Participants(59, secagg.participants_digest(sites[1:]))
    with pytest.raises(errors.PermissionDenied, match="altered"):
        other.verify(peers[sites[5]], ca.cert, QID, QUERY)

    # The round-1 command is the same few bytes whatever the federation's size.
    def setup(names: list[str]) -> pb.AnalyticsSetupCommand:
        digest = secagg.participants_digest(names)
        return pb.AnalyticsSetupCommand(query_id=QID, query=QUERY, participant_count=len(names),
                                        participants_digest=digest)  # fmt: skip

    small, big = setup(SITES), setup([str(i) for i in range(10_000)])
    assert abs(big.ByteSize() - small.ByteSize()) <= 2


def test_discrete_laplace_has_the_calibrated_spread():
    rng = random.Random(3)
    scale = 4.0
    draws = [discrete_laplace(scale, rng) for _ in range(20000)]
    assert all(isinstance(d, int) for d in draws)
    assert abs(statistics.fmean(draws)) < 0.2
    # Var of the two-sided geometric with q = exp(-1/b) is 2q / (1 - q)^2 (about 2b^2 for large b).
    import math

    q = math.exp(-1 / scale)
    assert statistics.pvariance(draws) == pytest.approx(2 * q / (1 - q) ** 2, rel=0.08)
    mean = build_query("p", "mean r", clip="-3:2")
    assert scales(mean, 0.5) == [4.0, 2 * 3 * 65536 / 0.5]
    assert add_noise([7, 9], mean, 0.0) == [7, 9]


def test_config_checks():
    with pytest.raises(errors.InvalidArgument, match="min_sites"):
        AnalyticsConfig(min_sites=1)
    with pytest.raises(errors.InvalidArgument, match="min_cohort"):
        AnalyticsConfig(min_cohort=0)
    with pytest.raises(errors.InvalidArgument, match="epsilon"):
        AnalyticsConfig(epsilon=-1)
    from silolink.config import AgentConfig, load

    cfg = load(AgentConfig, None, "SILOLINK_AGENT", {"SILOLINK_AGENT_ANALYTICS__DATASETS": "patients,labs",
                                                    "SILOLINK_AGENT_ANALYTICS__EPSILON": "0.5"})  # fmt: skip
    assert cfg.analytics.datasets == ("patients", "labs") and cfg.analytics.epsilon == 0.5
