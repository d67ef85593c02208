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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from silolink import config as config_mod
from silolink import errors
from silolink.config import CoordinatorConfig, CoordinatorLimitsConfig
from silolink.db import lock_of, open_database
from silolink.extensions import COORDINATOR_GROUP, ExtensionContext, load_service_extensions
from silolink.files import write_atomic
from silolink.identity import Role
from silolink.metrics import Metrics
from silolink.rpc.aio_guard import CallClass
from silolink.rpc.aio_server import AioServer, EventLoopThread, drain_servers, stop_servers
from silolink.rpc.guard import certificate_authenticator
from silolink.rpc.server import ServiceMount

from . import (
    accounts,
    analytics,
    apps,
    audit,
    bootstrap,
    catalog,
    dashboard_metrics,
    exchange,
    registry,
    scheduling,
    studies,
    training,
)
from .audit.store import AuditLog
from .control import servicer as control_servicer
from .control.admission import AdmissionRate
from .control.gc_policy import StreamFreezer
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
    accounts.attach,
    audit.attach,
    studies.attach,  # before the capabilities whose work belongs to a study
    scheduling.attach,  # the work queue (coordinator.queue), which training submits to
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


# Requests on the anonymous enrollment port are small (a token and a CSR): a lower bound
# on message size there keeps what anyone can make the coordinator buffer small.
ENROLL_MAX_MESSAGE_BYTES = 1024 * 1024
HEARTBEAT_DELAY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def call_classes(limits: CoordinatorLimitsConfig) -> list[CallClass]:
    """The classes of calls on the mTLS port (see ``silolink.rpc.aio_guard``)."""
    return [
        CallClass("control", 0, limits.control_streams),
        CallClass("operator", limits.operator_threads, limits.operator_calls),
        CallClass("agent", limits.agent_threads, limits.agent_calls),
        CallClass("bulk", limits.bulk_threads, limits.bulk_calls),
        CallClass("probe", 0, limits.probe_calls),
        # No caller reaches these on an mTLS port today; present so that a mount naming
        # them (or a future role) is served, not refused.
        CallClass("local", 2, 16),
        CallClass("anonymous", 2, 16),
    ]


def enroll_call_classes(limits: CoordinatorLimitsConfig) -> list[CallClass]:
    """The classes of the anonymous enrollment port: its own threads, its own limits."""
    return [
        CallClass("anonymous", limits.enroll_threads, limits.enroll_calls),
        CallClass("probe", 0, limits.enroll_probe_calls),
    ]


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
        self.clock = clock
        # Command results and connect events are handled on these threads, never on the
        # event loop that serves the agents' streams.
        self._results = ThreadPoolExecutor(4, thread_name_prefix="hub-results")
        self._events = ThreadPoolExecutor(1, thread_name_prefix="hub-events")
        self.hub = ControlHub(clock, dispatch=self._results.submit, notify=self._events.submit)
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
            presence_flush_s=self.config.limits.presence_flush_s,
            resource_samples=self.config.sites.resource_samples,
            resource_interval_s=self.config.sites.resource_interval_s,
        )
        self.sites.on_revoke(
            lambda site: self.hub.disconnect(
                site, errors.PermissionDenied(f"site {site} has been revoked by an operator")
            )
        )
        # Before the server: its authenticator looks up each operator's account per call.
        self.accounts = accounts.build(self)
        self.metrics = Metrics()
        self.metrics.gauge("silolink_sites", "Sites by state", "state", self._sites_by_state)
        self.metrics.gauge(
            "silolink_control_streams",
            "Open agent control streams",
            "kind",
            lambda: {"agent": self.hub.connected_count()},
        )
        dashboard_metrics.register(self)
        self._stop_hooks: list[Callable[[], None]] = []
        self._stopping_hooks: list[Callable[[], None]] = []
        limits = self.config.limits
        freezer = StreamFreezer(self.hub.connected_count, limits.gc_freeze_after_streams)
        self.hub.on_change(freezer.note_change)
        self.control = control_servicer.ControlServicer(
            self.hub,
            self.sites.presence,
            self.config.heartbeat_interval_s,
            self.config.stale_after_s,
            AdmissionRate(limits.admit_per_s, limits.admit_burst),
            clock,
            heartbeat_delay=self.metrics.histogram(
                "silolink_heartbeat_delay_seconds",
                "Delay from an agent sending a heartbeat (its clock) to the coordinator recording it",
                HEARTBEAT_DELAY_BUCKETS,
            ),
            freezer=freezer,
        )
        enrollment, *site_mounts = site_servicers.mounts(
            self.sites, self.hub.is_connected, lambda: self.public_addresses
        )
        mounts = [enrollment, *site_mounts, control_servicer.mount(self.control)]
        for attach in CAPABILITIES:
            mounts += attach(self)
        mounts += load_service_extensions(COORDINATOR_GROUP, ExtensionContext("coordinator", self.layout.root))
        # One event loop serves both ports: agents' control streams as coroutines, every
        # other call on the thread pool of its class (operators, agents, bulk streams).
        self.loop = EventLoopThread("coordinator-rpc")
        authenticate = certificate_authenticator(self._check_identity)
        self.server = AioServer(
            self.loop,
            mounts,
            authenticate,
            call_classes(limits),
            max_message_bytes=self.config.max_message_bytes,
            observer=self.metrics,
        )
        # The anonymous port is a server of its own, with its own small limits: no number
        # of anonymous callers can take a call slot that agents or operators need.
        # It serves the services every method of which is anonymous: enrollment, and the
        # redemption of an operator account's setup code.
        anonymous = [m for m in mounts if all(set(roles) == {Role.ANONYMOUS} for roles in m.rules.values())]
        self.enroll_server = AioServer(
            self.loop,
            [enrollment, *anonymous],
            authenticate,
            enroll_call_classes(limits),
            max_message_bytes=ENROLL_MAX_MESSAGE_BYTES,
            observer=self.metrics,
            known_elsewhere=[m for m in mounts if m is not enrollment and m not in anonymous],
            restrict_reflection=True,
            max_concurrent_rpcs=limits.enroll_calls + limits.enroll_probe_calls + 16,
        )
        self.metrics.counter(
            "silolink_control_streams_closed_silent",
            "Control streams closed because the site sent nothing for stale_after_s",
            "kind",
            lambda: {"agent": self.control.dropped_stale},
        )
        for port, server in (("mtls", self.server), ("enroll", self.enroll_server)):
            self.metrics.gauge(
                f"silolink_rpc_calls_in_flight_{port}",
                f"Calls in progress on the {port} port, by class",
                "class",
                lambda server=server: server.stats()["active"],
            )
            self.metrics.counter(
                f"silolink_rpc_calls_refused_busy_{port}",
                f"Calls refused RESOURCE_EXHAUSTED on the {port} port because their class was full",
                "class",
                lambda server=server: server.stats()["refused"],
            )
        self._stopped = False
        self.address = self.enroll_address = self.metrics_address = self.console_address = ""
        self.console = None
        self.public_addresses = ("", "")

    def _check_identity(self, identity, metadata):
        """Per call: the certificate must be one we issued and have not revoked; an operator's
        certificate (or the console acting for a logged-in account) becomes the account with
        its current role."""
        self.sites.check_identity(identity)
        return self.accounts.resolve(identity, metadata)

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
        port = self.server.bind(self.config.listen, mtls)
        enroll_port = self.enroll_server.bind(self.config.enroll_bind, tls)
        self.sites.presence.start()
        self.server.start()
        self.enroll_server.start()
        self.address = _advertised(self.config.listen, port)
        self.enroll_address = _advertised(self.config.enroll_bind, enroll_port)
        public_host = self.config.hostnames[0] if self.config.hostnames else "localhost"
        self.public_addresses = (
            self.config.public_address or _advertised(self.config.listen, port, public_host),
            self.config.public_enroll_address or _advertised(self.config.enroll_bind, enroll_port, public_host),
        )
        if self.config.metrics_listen:
            self.metrics_address = self.metrics.serve(self.config.metrics_listen)
        if self.config.console.address:
            from . import console

            self.console = console.start(self)
            self.console_address = self.console.address
        write_atomic(
            self.layout.endpoints,
            json.dumps(
                {
                    "address": self.address,
                    "enroll_address": self.enroll_address,
                    "metrics_address": self.metrics_address,
                    "console_address": self.console_address,
                    "pid": os.getpid(),
                }
            ).encode(),
            mode=0o644,
        )
        log.info(
            "coordinator serving agents and operators on %s (mTLS), enrollment on %s, metrics on %s, "
            "console on %s; CA %s",
            self.address,
            self.enroll_address,
            self.metrics_address or "off",
            f"https://{self.console_address}" if self.console_address else "off",
            self.ca.fingerprint,
        )
        return self

    def stop(self, grace_s: float | None = None, *, process_exits: bool = False) -> None:
        """Stop taking calls, end agent streams, finish calls in flight, close the database.

        ``process_exits``: the process ends right after (``serve``): agent streams are left
        to end with it, at once, instead of one by one (seconds with ten thousand sites)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        if self.console is not None:  # first: it is a client of the servers below
            self.console.stop()
            self.console.client.close()
        self.server.set_not_serving()
        self.enroll_server.set_not_serving()
        for hook in self._stopping_hooks:
            hook()
        started = time.monotonic()
        streams = self.hub.connected_count()
        self.control.refuse_new_streams()
        if process_exits:
            drain_servers([self.enroll_server, self.server], grace, streams="control")
            seconds = time.monotonic() - started
            log.info("stopping: calls drained in %.1f s; %d agent streams end with the process", seconds, streams)
            self.loop.abandon()
        else:
            self.hub.close_all(errors.ShuttingDown("the coordinator is shutting down; reconnect later"))
            stop_servers([self.enroll_server, self.server], grace)
            log.info("stopping: %d agent streams ended, servers stopped in %.1f s", streams, time.monotonic() - started)
            self.loop.stop()
        for hook in reversed(self._stop_hooks):
            hook()
        self.sites.presence.stop()
        self._results.shutdown(wait=True)
        self._events.shutdown(wait=True)
        self.metrics.stop()
        self.layout.endpoints.unlink(missing_ok=True)
        # Under the stores' lock: a background thread (a rollout redelivery on a reconnect)
        # may be mid-query, and closing under it crashes the sqlite3 module.
        with self.db_lock:
            self.db.close()
        log.info("coordinator stopped")

    def wait(self) -> None:
        self.server.wait()
