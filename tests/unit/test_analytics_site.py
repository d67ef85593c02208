"""The site's two rounds without sockets: one-shot answers, and a coordinator that lies is caught."""

from __future__ import annotations

import datetime as dt

import pytest

from edge_agent.analytics.site import SiteAnalytics
from edge_agent.catalog.store import Catalog
from edge_agent.identity import SiteIdentity
from silolink import errors, pki
from silolink.analytics import secagg
from silolink.analytics.query import build_query, from_ring
from silolink.config import AnalyticsConfig
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.identity import Role

SITES = ["hospital-a", "hospital-b"]


@pytest.fixture
def world(tmp_path):
    ca = pki.CertificateAuthority.create("test CA", dt.timedelta(days=1))
    sites = {}
    for i, name in enumerate(SITES):
        key = pki.generate_key()
        cert = ca.issue_client(key.public_key(), Role.AGENT, name, dt.timedelta(days=1))
        identity = SiteIdentity(name, key, cert, pki.cert_to_pem(ca.cert))
        path = tmp_path / f"{name}.db"
        csv = tmp_path / f"{name}.csv"
        csv.write_text("id,x\n" + "".join(f"r{j},{j + i}\n" for j in range(12 + i)))
        catalog = Catalog.open(path)
        catalog.import_csv(csv, "t")
        sites[name] = SiteAnalytics(catalog, path, lambda identity=identity: identity, AnalyticsConfig(), "schema")
    return sites


def setup_all(world, query_id="q" * 16, query=None):
    query = query or build_query("t", "sum x")
    command = pb.AnalyticsSetupCommand(query_id=query_id, query=query, sites=SITES)
    return {name: site.setup(command) for name, site in world.items()}


def peers_of(answers):
    return [
        pb.PeerKey(site=s, public_key=a.public_key, signature=a.signature, certificate_pem=a.certificate_pem)
        for s, a in answers.items()
    ]


def test_both_rounds_give_the_total_and_round_two_answers_once(world):
    answers = setup_all(world)
    command = pb.AnalyticsMaskCommand(query_id="q" * 16, peers=peers_of(answers))
    masked = [world[s].mask(command).masked for s in SITES]
    assert from_ring(sum(m[0] for m in masked)) == (sum(range(12)) + sum(range(1, 14))) << 16
    with pytest.raises(errors.FailedPrecondition, match="already answered, expired"):
        world["hospital-a"].mask(command)
    with pytest.raises(errors.AlreadyExists, match="already set up"):
        setup_all(world)
    assert world["hospital-a"].pending == 0


def test_a_coordinator_that_swaps_keys_or_participants_is_refused(world):
    answers = setup_all(world)
    peers = peers_of(answers)
    _, fake = secagg.new_key()
    own = pb.PeerKey()
    own.CopyFrom(peers[0])
    own.public_key = fake
    with pytest.raises(errors.PermissionDenied, match="not the one it sent"):
        world["hospital-a"].mask(pb.AnalyticsMaskCommand(query_id="q" * 16, peers=[own, peers[1]]))
    with pytest.raises(errors.PermissionDenied, match="altered on the way"):
        world["hospital-b"].mask(pb.AnalyticsMaskCommand(query_id="q" * 16, peers=[own, peers[1]]))

    answers = setup_all(world, "r" * 16)
    with pytest.raises(errors.PermissionDenied, match="not those of its participants"):
        world["hospital-a"].mask(pb.AnalyticsMaskCommand(query_id="r" * 16, peers=peers_of(answers)[:1]))


def test_round_one_refusals(world):
    site = world["hospital-a"]
    for command, error, message in [
        (pb.AnalyticsSetupCommand(query_id="short", query=build_query("t", "count"), sites=SITES),
         errors.InvalidArgument, "query id"),
        (pb.AnalyticsSetupCommand(query_id="s" * 16, query=build_query("t", "count"), sites=["hospital-b", "x-1"]),
         errors.InvalidArgument, "do not include this site"),
        (pb.AnalyticsSetupCommand(query_id="t" * 16, query=build_query("t", "count"), sites=["hospital-a"]),
         errors.FailedPrecondition, "at least 2 sites"),
        (pb.AnalyticsSetupCommand(query_id="u" * 16, query=build_query("t", "count", where="x > 5"), sites=SITES),
         errors.FailedPrecondition, "minimum cohort of 10"),
        (pb.AnalyticsSetupCommand(query_id="v" * 16, query=build_query("nope", "count"), sites=SITES),
         errors.NotFound, "no dataset named 'nope'$"),
        (pb.AnalyticsSetupCommand(query_id="w" * 16, query=build_query("t", "sum y"), sites=SITES),
         errors.InvalidArgument, "its columns are id, x"),
    ]:  # fmt: skip
        with pytest.raises(error, match=message):
            site.setup(command)
    assert site.pending == 0


def test_errors_list_columns_only_where_the_share_policy_does(world, tmp_path):
    site = world["hospital-a"]
    hidden = SiteAnalytics(site._catalog, site._catalog_db, site._identity, AnalyticsConfig(), "name")
    command = pb.AnalyticsSetupCommand(query_id="x" * 16, query=build_query("t", "sum y"), sites=SITES)
    with pytest.raises(errors.InvalidArgument) as refused:
        hidden.setup(command)
    assert refused.value.message == "dataset 't' has no column 'y'"
    limited = SiteAnalytics(site._catalog, site._catalog_db, site._identity, AnalyticsConfig(datasets=()), "schema")
    with pytest.raises(errors.PermissionDenied, match="does not allow queries on dataset 't'"):
        limited.setup(command)
