"""The site's exchange: its HPKE keys, sending and receiving sealed envelopes, agreements,
and its watch over the coordinator's audit chain."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from silolink import errors
from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent

log = logging.getLogger(__name__)
RETRY_S = 1.0


class ExchangeWorker:
    """Publishes the site's key, follows the audit chain and prunes drained keys, every
    ``audit_poll_s`` (and sooner after a failure, so a fresh agent publishes quickly)."""

    def __init__(self, exchange, watcher, poll_s: float) -> None:
        self._exchange = exchange
        self._watcher = watcher
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exchange-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.tick()
            self._wake.wait(self._poll_s if ok else min(RETRY_S, self._poll_s))
            self._wake.clear()

    def tick(self) -> bool:
        try:
            if self._exchange.publish_key():
                log.info("published exchange key %s", self._exchange.published_key_id())
            self._watcher.refresh()
            self._exchange.prune_keys()
            return True
        except errors.SiloError as e:
            level = logging.DEBUG if e.code is errors.Code.UNAVAILABLE else logging.WARNING
            log.log(level, "exchange upkeep failed, will retry: %s", e.message)
            return False
        except Exception:  # noqa: BLE001 - the worker must outlive any one failure
            log.exception("exchange upkeep failed unexpectedly")
            return False


def attach(agent: Agent) -> list[ServiceMount]:
    from silolink.db import lock_of, open_database

    from ..identity import load_identity
    from .audit import AuditWatcher
    from .keys import KeyRing
    from .remote import CoordinatorExchange
    from .service import SiteExchange
    from .servicer import mounts
    from .store import SiteExchangeStore

    cfg = agent.config.exchange
    root = agent.layout.root / "exchange"
    root.mkdir(parents=True, exist_ok=True)
    remote = CoordinatorExchange(
        agent.config.coordinator, lambda: load_identity(agent.layout), agent.config.max_message_bytes
    )
    db = open_database(root / "exchange.db")
    exchange = SiteExchange(
        agent.site,
        cfg,
        remote,
        KeyRing(root / "keys"),
        SiteExchangeStore(db),
        Path(agent.layout.root / cfg.inbox_dir),
        root / "published",
    )
    exchange.studies = getattr(agent, "studies", None)
    watcher = AuditWatcher(root / "audit_head.json", remote)
    worker = ExchangeWorker(exchange, watcher, cfg.audit_poll_s)
    worker.start()
    agent.exchange = exchange  # type: ignore[attr-defined] - for tests
    agent.exchange_worker = worker  # type: ignore[attr-defined]

    def stop() -> None:
        worker.stop()
        remote.close()
        with lock_of(db):  # a worker tick still running past the join must finish its query first
            db.close()

    agent.on_stop(stop)
    return mounts(exchange, watcher)
