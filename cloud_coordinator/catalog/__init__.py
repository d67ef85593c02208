"""Operators' view of the sites' catalogs: asked of each site, answered by its policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .servicer import CatalogServicer, mount

    return [mount(CatalogServicer(coordinator.hub, coordinator.sites))]
