"""The exchange broker: sites' HPKE keys, sharing agreements, sealed envelopes."""

from __future__ import annotations

import sqlite3
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator

# Where the broker keeps its files, relative to the data directory: pending envelopes'
# ciphertext in ``blobs/`` (large ones) and ``segments/`` (small ones, many to a file).
ROOT = PurePosixPath("state/exchange")


def files_in_use(conn: sqlite3.Connection) -> set[str]:
    """The files (relative to the data directory) that the pending envelopes in this
    database need: a backup of the database must hold each of them."""
    from .broker import BLOBS_DIR, SEGMENTS_DIR
    from .segments import segment_name

    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'envelopes'").fetchone()
    if not has_table:
        return set()
    pending = "FROM envelopes WHERE state = 'pending'"
    blobs = {str(ROOT / BLOBS_DIR / r[0]) for r in conn.execute(f"SELECT envelope_id {pending} AND in_file = 1")}
    segments = {
        str(ROOT / SEGMENTS_DIR / segment_name(r[0]))
        for r in conn.execute(f"SELECT DISTINCT segment {pending} AND segment IS NOT NULL")
    }
    return blobs | segments


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .broker import Broker
    from .registry import AgreementRegistry, SiteKeys
    from .servicer import ExchangeAdminServicer, ExchangeServicer, mounts
    from .store import ExchangeStore

    store = ExchangeStore(coordinator.db)
    agreements = AgreementRegistry(store, coordinator.sites, coordinator.audit)
    agreements.studies = getattr(coordinator, "studies", None)
    keys = SiteKeys(store, coordinator.sites, coordinator.audit)
    broker = Broker(
        store,
        agreements,
        keys,
        coordinator.sites,
        coordinator.audit,
        coordinator.config.exchange,
        coordinator.layout.root / ROOT,
    )
    coordinator.on_stop(broker.stop)
    coordinator.exchange = broker  # type: ignore[attr-defined] - for tests and benchmarks
    return mounts(ExchangeServicer(broker, agreements, keys), ExchangeAdminServicer(agreements, store.queues))
