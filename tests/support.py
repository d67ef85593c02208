"""Helpers for tests: real coordinators and agents on loopback, port 0, temp dirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cloud_coordinator import bootstrap
from cloud_coordinator.app import Coordinator, load_config
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from edge_agent import enroll as enroll_mod
from edge_agent.daemon import Agent
from edge_agent.daemon import load_config as load_agent_config
from silolink.config import SchedulingConfig, SiteStudiesConfig
from silolink.polling import wait_for  # noqa: F401 - re-exported for tests

# Fast timings so tests see heartbeats, reconnects and staleness within a second or two.
COORDINATOR_TEST_SETTINGS = dict(
    listen="127.0.0.1:0",
    enroll_listen="127.0.0.1:0",
    metrics_listen="",
    heartbeat_interval_s=0.2,
    shutdown_grace_s=0.5,
    max_workers=64,
    # Tests share one host: schedule by what sites declare, not by the host's load; quick passes.
    scheduling=SchedulingConfig(heartbeat_load=False, tick_s=0.1, offer_timeout_s=5.0, decline_cooldown_s=2.0),
)
AGENT_TEST_SETTINGS = dict(
    local_listen="127.0.0.1:0",
    reconnect_initial_s=0.05,
    reconnect_max_s=0.5,
    shutdown_grace_s=0.5,
    # Tests share one busy host: its load average says nothing about a site's room.
    studies=SiteStudiesConfig(busy_load_per_cpu=1000.0),
)


def init_coordinator(data_dir: Path) -> Path:
    bootstrap.init(data_dir, ["localhost", "127.0.0.1"])
    return data_dir


def start_coordinator(data_dir: Path, **overrides) -> Coordinator:
    if not (data_dir / "coordinator.toml").exists():
        init_coordinator(data_dir)
    settings = {**COORDINATOR_TEST_SETTINGS, **overrides}
    # A site is stale only after missing heartbeats: keep the test staleness above a longer interval.
    settings.setdefault("stale_after_s", 0)
    settings["stale_after_s"] = settings["stale_after_s"] or max(5.0, 3 * settings["heartbeat_interval_s"])
    cfg = dataclasses.replace(load_config(data_dir, environ={}), **settings)
    return Coordinator(data_dir, cfg).start()


def operator(coordinator: Coordinator) -> OperatorClient:
    creds = OperatorCredentials.resolve(data_dir=coordinator.layout.root)
    return OperatorClient(OperatorCredentials(coordinator.address, creds.credentials))


def enroll_site(coordinator: Coordinator, name: str, agent_dir: Path, kind: str = "hospital", **tags: str):
    with operator(coordinator) as client:
        added = client.add_site(name, kind, tags)
    return enroll_mod.enroll(
        agent_dir, coordinator.address, added["token"], added["ca_fingerprint"], coordinator.enroll_address
    )


def start_agent(agent_dir: Path, coordinator_address: str | None = None, **overrides) -> Agent:
    cfg = load_agent_config(agent_dir, environ={})
    settings = {**AGENT_TEST_SETTINGS, **overrides}
    if coordinator_address:
        settings["coordinator"] = coordinator_address
    return Agent(agent_dir, dataclasses.replace(cfg, **settings)).start()
