"""Heartbeats at memory speed: presence lives in memory and reaches the database in
batches, so a stalled disk never makes a healthy site look dead."""

import threading
import time

from tests import support


def test_a_stalled_database_does_not_make_healthy_sites_look_dead(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c", stale_after_s=1.0, heartbeat_interval_s=0.1)
    support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
    agent = support.start_agent(tmp_path / "a")
    release = threading.Event()
    holder = threading.Thread()
    try:
        assert agent.wait_connected(10)
        before = coordinator.sites.get_site("hospital-a").last_heartbeat

        # Hold every store's lock (as a disk that stopped answering would) for 3 x stale_after_s.
        def stall():
            with coordinator.db_lock:
                release.wait(10)

        holder = threading.Thread(target=stall)
        holder.start()
        time.sleep(3.0)
        assert coordinator.hub.is_connected("hospital-a")
        with support.operator(coordinator) as client:  # read from memory: answered, and live
            (site,) = client.list_sites()
        assert site["state"] == "online" and coordinator.sites.get_site("hospital-a").last_heartbeat > before + 2
    finally:
        release.set()
        if holder.ident:
            holder.join(5)
        agent.stop(0)
        coordinator.stop(0)


def test_heartbeats_reach_the_database_in_batches(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c", heartbeat_interval_s=0.05)
    presence = coordinator.sites.presence
    try:
        for name in ("hospital-a", "hospital-b"):
            support.enroll_site(coordinator, name, tmp_path / name)
        agents = [support.start_agent(tmp_path / n) for n in ("hospital-a", "hospital-b")]
        for agent in agents:
            assert agent.wait_connected(10)
        time.sleep(1.0)
        flushes = presence.flushes
        written = presence.flush()
        stored = coordinator.sites._store.get_site("hospital-a")
        # About 40 heartbeats arrived in that second; at most one row per site per flush.
        assert written <= 2 and presence.flushes == flushes + (1 if written else 0)
        assert stored.last_heartbeat is not None and stored.resources["cpu_count"] >= 1
        for agent in agents:
            agent.stop(0)
    finally:
        coordinator.stop(0)
