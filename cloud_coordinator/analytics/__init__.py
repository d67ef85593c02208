"""Federated analytics: operators' queries answered by sites, totals only (secure sums)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .history import QueryHistory, QueryHistoryStore
    from .service import QueryService
    from .servicer import AnalyticsServicer, mount

    settings = coordinator.config.analytics
    history = QueryHistory(
        QueryHistoryStore(coordinator.db, coordinator.db_lock),
        settings.history_max_entries,
        settings.history_max_age_s,
        clock=coordinator.clock,
    )
    service = QueryService(
        coordinator.hub,
        coordinator.sites,
        coordinator.audit,
        history=history,
        studies=getattr(coordinator, "studies", None),
        round_timeout_s=coordinator.config.limits.query_round_timeout_s,
    )
    coordinator.analytics = service  # type: ignore[attr-defined]
    coordinator.query_history = history  # type: ignore[attr-defined]
    return [mount(AnalyticsServicer(service, history))]
