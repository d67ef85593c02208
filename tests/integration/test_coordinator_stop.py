"""A coordinator stopping right before its process exits (``serve`` on SIGTERM): calls in
flight finish within the grace, new calls are refused, and agent streams are left to end
with the process instead of one by one (seconds with ten thousand sites)."""

import threading
import time

import pytest

from cloud_coordinator.sites.servicers import AdminServicer
from silolink import errors
from tests import support


def test_a_stop_before_exit_finishes_calls_in_flight_and_leaves_agent_streams_to_the_exit(tmp_path, monkeypatch):
    entered = threading.Event()
    list_sites = AdminServicer.ListSites

    def slow_list_sites(self, request, context):
        entered.set()
        time.sleep(1.0)
        return list_sites(self, request, context)

    monkeypatch.setattr(AdminServicer, "ListSites", slow_list_sites)  # before the servicer is mounted
    coordinator = support.start_coordinator(tmp_path / "coordinator")
    support.enroll_site(coordinator, "hospital-a", tmp_path / "hospital-a")
    agent = support.start_agent(tmp_path / "hospital-a")
    try:
        assert agent.wait_connected(10), agent.link.status.last_error
        listed: dict = {}

        def operator_call():
            with support.operator(coordinator) as client:
                listed["sites"] = client.list_sites()

        caller = threading.Thread(target=operator_call)
        caller.start()
        assert entered.wait(10)
        started = time.monotonic()
        coordinator.stop(grace_s=30, process_exits=True)
        stop_s = time.monotonic() - started
        caller.join(10)

        assert [site["name"] for site in listed["sites"]] == ["hospital-a"]  # finished within the grace
        assert stop_s < 10, f"the stop waited {stop_s:.1f} s: for the agent's stream, not only the call"
        assert agent.link.status.state == "connected"  # its stream ends with the process, not before
        with pytest.raises(errors.SiloError) as refused, support.operator(coordinator) as client:
            client.list_sites()
        assert refused.value.code is errors.Code.UNAVAILABLE
    finally:
        agent.stop(0)
