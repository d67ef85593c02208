"""Assemble a running coordinator: stores, services, servers, metrics.

``Coordinator(data_dir).start()`` binds the mTLS listener (agents and operators), the
enrollment listener (server TLS, enrollment only) and the metrics port, and writes the
bound addresses to ``run/endpoints.json`` so operator commands can find them.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from silolink import config as config_mod
from silolink import errors
from silolink.config import CoordinatorConfig
from silolink.db import lock_of, open_database
from silolink.extensions import COORDINATOR_GROUP, ExtensionContext, load_service_extensions
from silolink.files import write_atomic
from silolink.metrics import Metrics
from silolink.rpc.guard import certificate_authenticator
from silolink.rpc.server import ServiceMount, bind, build_server, set_not_serving

from . import analytics, apps, audit, bootstrap, catalog, exchange, registry, training
from .audit.store import AuditLog
from .control import servicer as control_servicer
from .control.hub import ControlHub
from .layout import CoordinatorLayout
from .sites import servicers as site_servicers
from .sites.service import SiteService
from .sites.store import SiteStore

log = logging.getLogger(__name__)

# Each capability's ``attach(coordinator) -> list[ServiceMount]``: it builds its stores and
# services from the coordinator's database, hub, site service and config, registers stop
# hooks, and returns the gRPC services to mount. Capabilities add themselves here.
CAPABILITIES: list[Callable[[Coordinator], list[ServiceMount]]] = [
    audit.attach,
    catalog.attach,
    registry.attach,
    exchange.attach,
    apps.attach,  # before training: jobs run published apps
    training.attach,
    analytics.attach,
]


def load_config(data_dir: Path, environ=None, **overrides) -> CoordinatorConfig:
    """The coordinator's config file, then environment, then explicit overrides."""
    layout = CoordinatorLayout(Path(data_dir))
    cfg = config_mod.load(CoordinatorConfig, layout.config, "SILOLINK_COORDINATOR", environ)
    return config_mod.override(cfg, **overrides)


def _advertised(address: str, port: int, wildcard_host: str = "localhost") -> str:
    """The address to dial for a listener bound at ``address`` (actual ``port``)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = wildcard_host
    return f"{host}:{port}"


class Coordinator:
    """One coordinator process's services and servers."""

    def __init__(self, data_dir: Path, cfg: CoordinatorConfig | None = None, clock: Callable[[], float] = time.time):
        self.layout = CoordinatorLayout(Path(data_dir).resolve())
        self.config = cfg or load_config(self.layout.root)
        self.ca = bootstrap.load_ca(self.layout)
        bootstrap.ensure_server_certificate(self.layout, self.config, self.ca)
        self.db = open_database(self.layout.database)
        self.hub = ControlHub(clock)
        # Stores share the one connection, so they must share one lock: with a lock each, a
        # heartbeat's update could land inside another store's transaction (and fail).
        self.db_lock = lock_of(self.db)  # every store on this connection shares it
        self.audit = AuditLog(self.db, bootstrap.load_audit_key(self.layout), clock, lock=self.db_lock)
        self.sites = SiteService(
            SiteStore(self.db, self.db_lock),
            self.ca,
            self.audit,
            token_ttl_s=self.config.token_ttl_s,
            site_cert_lifetime_s=self.config.site_cert_lifetime_s,
            clock=clock,
        )
        self.sites.on_revoke(
            lambda site: self.hub.disconnect(
                site, errors.PermissionDenied(f"site {site} has been revoked by an operator")
            )
        )
        self.metrics = Metrics()
        self.metrics.gauge("silolink_sites", "Sites by state", "state", self._sites_by_state)
        self.metrics.gauge(
            "silolink_control_streams",
            "Open agent control streams",
            "kind",
            lambda: {"agent": len(self.hub.connected_sites())},
        )
        self._stop_hooks: list[Callable[[], None]] = []
        self._stopping_hooks: list[Callable[[], None]] = []
        control = control_servicer.ControlServicer(
            self.hub, self.sites, self.config.heartbeat_interval_s, self.config.stale_after_s
        )
        mounts = [
            *site_servicers.mounts(self.sites, self.hub.is_connected, lambda: self.public_addresses),
            control_servicer.mount(control),
        ]
        for attach in CAPABILITIES:
            mounts += attach(self)
        mounts += load_service_extensions(COORDINATOR_GROUP, ExtensionContext("coordinator", self.layout.root))
        self.server, self._health = build_server(
            mounts,
            certificate_authenticator(self.sites.check_identity),
            max_workers=self.config.max_workers,
            max_message_bytes=self.config.max_message_bytes,
            observer=self.metrics,
        )
        self.address = self.enroll_address = self.metrics_address = ""
        self.public_addresses = ("", "")

    def on_stopping(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` first when the coordinator stops, while agent streams are still open."""
        self._stopping_hooks.append(hook)

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the coordinator stops, after calls in flight finish."""
        self._stop_hooks.append(hook)

    def _sites_by_state(self) -> dict[str, float]:
        counts: collections.Counter[str] = collections.Counter({state: 0 for state in site_servicers.STATE_TO_PROTO})
        for site in self.sites.list_sites():
            counts[site_servicers.site_state(site, self.hub.is_connected)] += 1
        return dict(counts)

    def start(self) -> Coordinator:
        key = self.layout.server_key.read_bytes()
        chain = self.layout.server_cert.read_bytes()
        ca_pem = self.layout.ca_cert.read_bytes()
        mtls = grpc.ssl_server_credentials([(key, chain)], root_certificates=ca_pem, require_client_auth=True)
        tls = grpc.ssl_server_credentials([(key, chain)])
        port = bind(self.server, self.config.listen, mtls)
        enroll_port = bind(self.server, self.config.enroll_listen, tls)
        self.server.start()
        self.address = _advertised(self.config.listen, port)
        self.enroll_address = _advertised(self.config.enroll_listen, enroll_port)
        public_host = self.config.hostnames[0] if self.config.hostnames else "localhost"
        self.public_addresses = (
            self.config.public_address or _advertised(self.config.listen, port, public_host),
            self.config.public_enroll_address or _advertised(self.config.enroll_listen, enroll_port, public_host),
        )
        if self.config.metrics_listen:
            self.metrics_address = self.metrics.serve(self.config.metrics_listen)
        write_atomic(
            self.layout.endpoints,
            json.dumps(
                {
                    "address": self.address,
                    "enroll_address": self.enroll_address,
                    "metrics_address": self.metrics_address,
                    "pid": os.getpid(),
                }
            ).encode(),
            mode=0o644,
        )
        log.info(
            "coordinator serving agents and operators on %s (mTLS), enrollment on %s, metrics on %s; CA %s",
            self.address,
            self.enroll_address,
            self.metrics_address or "off",
            self.ca.fingerprint,
        )
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Stop taking calls, end agent streams, finish calls in flight, close the database."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        set_not_serving(self._health)
        for hook in self._stopping_hooks:
            hook()
        self.hub.close_all(errors.Unavailable("the coordinator is shutting down; reconnect later"))
        self.server.stop(grace).wait()
        for hook in reversed(self._stop_hooks):
            hook()
        self.metrics.stop()
        self.layout.endpoints.unlink(missing_ok=True)
        # Under the stores' lock: a background thread (a rollout redelivery on a reconnect)
        # may be mid-query, and closing under it crashes the sqlite3 module.
        with self.db_lock:
            self.db.close()
        log.info("coordinator stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()
