"""Signed models from the coordinator's registry: verified, then installed and activated."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    """Take install_model orders; install them on a background thread (``agent.registry``)."""
    from .client import DistributionClient
    from .installer import Installer

    installer = Installer(
        agent.layout, agent.config, agent.models, lambda: DistributionClient(agent.layout, agent.config)
    )
    agent.dispatcher.register("install_model", installer.handle)
    installer.start()
    agent.on_stop(installer.stop)
    agent.registry = installer
    return []
