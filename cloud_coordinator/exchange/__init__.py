"""The exchange broker: sites' HPKE keys, sharing agreements, sealed envelopes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .broker import Broker
    from .registry import AgreementRegistry, SiteKeys
    from .servicer import ExchangeAdminServicer, ExchangeServicer, mounts
    from .store import ExchangeStore

    store = ExchangeStore(coordinator.db)
    agreements = AgreementRegistry(store, coordinator.sites, coordinator.audit)
    keys = SiteKeys(store, coordinator.sites, coordinator.audit)
    broker = Broker(
        store,
        agreements,
        keys,
        coordinator.sites,
        coordinator.audit,
        coordinator.config.exchange,
        coordinator.layout.state / "exchange",
    )
    coordinator.on_stop(broker.stop)
    coordinator.exchange = broker  # type: ignore[attr-defined] - for tests and benchmarks
    return mounts(ExchangeServicer(broker, agreements, keys), ExchangeAdminServicer(agreements))
