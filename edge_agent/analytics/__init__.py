"""Federated analytics at the site: answer queries over the catalog, within the site's
policy, with contributions masked so the coordinator learns only totals across sites."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    """Answer the coordinator's two analytics rounds (no local-API service)."""
    from ..identity import load_identity
    from .site import SiteAnalytics

    site = SiteAnalytics(
        agent.catalog,
        agent.layout.catalog_db,
        lambda: load_identity(agent.layout),
        agent.config.analytics,
        agent.config.catalog.share_with_coordinator,
        terms=agent.studies.query_terms if hasattr(agent, "studies") else None,
    )
    agent.analytics = site  # type: ignore[attr-defined]
    agent.dispatcher.register("analytics_setup", site.setup)
    agent.dispatcher.register("analytics_mask", site.mask)
    return []
