"""The agent's control stream against a real coordinator: presence, commands,
revocation, restarts, certificate renewal and the local API."""

import threading
import time

import pytest

from edge_agent.client import LocalClient
from edge_agent.daemon import Agent
from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import errors, pki
from silolink.gen.control.v1 import control_pb2
from tests import support


def site_state(coordinator, name):
    with support.operator(coordinator) as client:
        return {s["name"]: s for s in client.list_sites()}[name]


def test_connected_agent_is_online_with_heartbeat_resources_and_version(coordinator, make_agent):
    make_agent("hospital-a")
    make_agent("factory-a", kind="factory")
    first = support.wait_for(
        lambda: site_state(coordinator, "hospital-a")["last_heartbeat"] and site_state(coordinator, "hospital-a")
    )
    assert first["state"] == "online" and first["version"] == "0.1.0" and first["kind"] == "hospital"
    assert first["resources"]["cpu_count"] >= 1 and first["resources"]["memory_total_bytes"] > 0
    assert first["resources"]["disk_free_bytes"] > 0
    # Heartbeats keep coming (every 0.2 s in tests).
    support.wait_for(
        lambda: site_state(coordinator, "hospital-a")["last_heartbeat"] != first["last_heartbeat"],
        5,
        "a later heartbeat",
    )
    assert site_state(coordinator, "factory-a")["state"] == "online"


def test_commands_travel_down_the_stream_the_agent_opened(coordinator, make_agent):
    make_agent("hospital-a")
    future = coordinator.hub.request("hospital-a", ping=control_pb2.PingCommand(payload=b"are you there"))
    assert future.result(5).ping.payload == b"are you there"


def test_stopped_agent_goes_offline(coordinator, make_agent):
    agent = make_agent("hospital-a")
    agent.stop(0)
    support.wait_for(lambda: site_state(coordinator, "hospital-a")["state"] == "offline", 5, "offline")


def test_revoking_a_connected_site_closes_its_stream_and_refuses_it(coordinator, make_agent):
    agent = make_agent("hospital-a")
    pending = coordinator.hub.request("hospital-a", ping=control_pb2.PingCommand())
    pending.result(5)
    with support.operator(coordinator) as client:
        assert client.revoke_site("hospital-a")["state"] == "revoked"
    support.wait_for(lambda: agent.link.status.state == "revoked", 5, "agent to see revocation")
    assert "revoked" in agent.link.status.last_error
    assert not coordinator.hub.is_connected("hospital-a")
    with pytest.raises(errors.Unavailable):
        coordinator.hub.request("hospital-a", ping=control_pb2.PingCommand())
    # Its certificate is refused on every call from now on, renewal included.
    with pytest.raises(errors.PermissionDenied):
        coordinator.sites.check_identity(pki.identity_of(load_identity(agent.layout).cert))
    assert site_state(coordinator, "hospital-a")["state"] == "revoked"


def test_agent_reconnects_after_a_coordinator_restart_and_state_is_kept(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c")
    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    agent = support.start_agent(tmp_path / "a")
    try:
        assert agent.wait_connected(10)
        first_session = agent.link.status.session_id
        listen, enroll = coordinator.address, coordinator.enroll_address
        coordinator.stop(0)
        support.wait_for(lambda: agent.link.status.state == "connecting", 5, "agent to notice")
        coordinator = support.start_coordinator(tmp_path / "c", listen=listen, enroll_listen=enroll)
        support.wait_for(
            lambda: agent.link.status.state == "connected" and agent.link.status.session_id != first_session,
            10,
            "reconnect",
        )
        site = site_state(coordinator, "hospital-a")
        assert site["state"] == "online" and site["kind"] == "hospital"
    finally:
        agent.stop(0)
        coordinator.stop(0)


def test_certificate_renews_before_expiry_without_operator_action(tmp_path):
    # 4 s certificates, renewed when less than half remains: renewal every ~2 s.
    coordinator = support.start_coordinator(tmp_path / "c", site_cert_lifetime_s=4)
    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    before = load_identity(AgentLayout(tmp_path / "a"))
    agent = support.start_agent(tmp_path / "a", renew_remaining_fraction=0.5)
    try:
        renewed = support.wait_for(
            lambda: (
                (ident := load_identity(AgentLayout(tmp_path / "a"))).cert.serial_number != before.cert.serial_number
                and ident
            ),
            10,
            "renewal",
        )
        assert renewed.key.private_numbers() != before.key.private_numbers()  # a fresh key too
        support.wait_for(lambda: agent.link.status.state == "connected", 10, "reconnect with the new certificate")
        assert site_state(coordinator, "hospital-a")["certificate_expires_at"] is not None
    finally:
        agent.stop(0)
        coordinator.stop(0)


def test_local_api_reports_status(coordinator, make_agent):
    agent = make_agent("hospital-a")
    with LocalClient(agent.local_address) as client:
        status = client.status()
    assert status["site"] == "hospital-a" and status["state"] == "connected"
    assert status["coordinator"] == coordinator.address and status["certificate_expires_at"]


def test_local_api_defaults_to_a_private_unix_socket(coordinator, tmp_path):
    import os
    import stat

    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    agent = support.start_agent(tmp_path / "a", local_listen="unix:agent.sock")
    try:
        assert agent.local_address == f"unix:{(tmp_path / 'a' / 'agent.sock').resolve()}"
        mode = stat.S_IMODE(os.stat(agent.local_address[5:]).st_mode)
        assert mode & 0o007 == 0  # no access for other users
        with LocalClient.for_data_dir(tmp_path / "a") as client:
            assert client.status()["site"] == "hospital-a"
    finally:
        agent.stop(0)


def test_local_api_refuses_a_non_loopback_address_unless_allowed(coordinator, tmp_path):
    import dataclasses

    from edge_agent.daemon import load_config

    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    cfg = dataclasses.replace(load_config(tmp_path / "a", environ={}), local_listen="0.0.0.0:0")
    with pytest.raises(errors.InvalidArgument, match="not loopback"):
        Agent(tmp_path / "a", cfg)


def test_agent_without_enrollment_says_what_to_do(tmp_path):
    with pytest.raises(errors.FailedPrecondition, match="edge-agent enroll"):
        Agent(tmp_path / "empty")


def test_stopping_waits_for_a_database_query_in_flight(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c")
    release, results = threading.Event(), []

    def background_query():  # as a rollout redelivery on a reconnect runs, off the RPC threads
        with coordinator.db_lock:
            results.append(coordinator.db.execute("select 1").fetchall())
            release.wait(5)
            results.append(coordinator.db.execute("select 2").fetchall())

    query = threading.Thread(target=background_query)
    query.start()
    time.sleep(0.1)
    stopper = threading.Thread(target=coordinator.stop, args=(0,))
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive()  # the database is not closed under the query
    release.set()
    query.join(5)
    stopper.join(10)
    assert not stopper.is_alive() and results == [[(1,)], [(2,)]]
