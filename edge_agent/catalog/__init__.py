"""The site's data catalog: datasets in a local SQLite file that never leaves the site."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    """Answer the coordinator's describe_catalog command, cut to the site's share policy."""
    from .policy import describe_catalog

    share = agent.config.catalog.share_with_coordinator
    agent.dispatcher.register("describe_catalog", lambda command: describe_catalog(agent.catalog, share))
    return []
