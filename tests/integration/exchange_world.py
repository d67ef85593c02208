"""A coordinator and three hospitals with exchange keys and agreements, for exchange tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from cloud_coordinator.app import Coordinator
from cloud_coordinator.cli.exchange import ExchangeAdmin
from edge_agent.client import LocalClient
from edge_agent.daemon import Agent
from edge_agent.exchange.client import LocalExchangeClient
from silolink.config import AgentExchangeConfig, CoordinatorExchangeConfig
from tests import support

LIMITS = CoordinatorExchangeConfig(
    max_envelope_bytes=8 * 1024 * 1024,
    quota_bytes_per_site=12 * 1024 * 1024,
    sweep_interval_s=0.2,
)


@dataclass
class ExchangeWorld:
    root: Path
    coordinator: Coordinator
    agents: dict[str, Agent] = field(default_factory=dict)
    clients: dict[str, LocalClient] = field(default_factory=dict)

    def site(self, name: str) -> LocalExchangeClient:
        return LocalExchangeClient(self.clients[name])

    def admin(self):
        return support.operator(self.coordinator)

    def add_site(self, name: str, **exchange_settings) -> Agent:
        agent_dir = self.root / name
        support.enroll_site(self.coordinator, name, agent_dir)
        cfg = dataclasses.replace(AgentExchangeConfig(), audit_poll_s=0.5, **exchange_settings)
        agent = support.start_agent(agent_dir, exchange=cfg)
        self.agents[name] = agent
        self.clients[name] = LocalClient(agent.local_address)
        assert agent.wait_connected(10)
        return agent

    def wait_published(self, name: str) -> None:
        store = self.coordinator.exchange._keys._store  # type: ignore[attr-defined]
        support.wait_for(lambda: store.current_key(name) is not None, 10, f"{name}'s exchange key")

    def agree(self, sender: str, recipient: str, purpose: str, accept: bool = True) -> str:
        with self.admin() as op:
            agreement = ExchangeAdmin(op).add_agreement(sender, recipient, purpose)
        if accept:
            self.site(recipient).accept(agreement["id"])
        return agreement["id"]

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        for agent in self.agents.values():
            agent.stop(0)
        self.coordinator.stop(0)


def start_world(root: Path, limits: CoordinatorExchangeConfig = LIMITS, **coordinator_overrides) -> ExchangeWorld:
    coordinator = support.start_coordinator(root / "coordinator", exchange=limits, **coordinator_overrides)
    return ExchangeWorld(root, coordinator)
