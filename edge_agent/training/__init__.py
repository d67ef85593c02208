"""Federated training at the site: Flower messages run through the site's installed apps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    from .host import FlowerHost

    host = FlowerHost(agent.config.training, agent.catalog, agent.layout.catalog_db)
    agent.dispatcher.register("flower", host.handle)
    return []
