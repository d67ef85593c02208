"""Federated analytics: operators' queries answered by sites, totals only (secure sums)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .service import QueryService
    from .servicer import AnalyticsServicer, mount

    service = QueryService(
        coordinator.hub, coordinator.sites, coordinator.audit, studies=getattr(coordinator, "studies", None)
    )
    coordinator.analytics = service  # type: ignore[attr-defined]
    return [mount(AnalyticsServicer(service))]
