"""Assemble a running agent: the local API server and the control link.

``Agent(data_dir).start()`` binds the local API (a unix socket in the data directory by
default), starts the control link, and writes the bound address to ``run/endpoints.json``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from silolink import config as config_mod
from silolink import errors, sdnotify
from silolink.config import AgentConfig
from silolink.extensions import AGENT_GROUP, ExtensionContext, load_service_extensions
from silolink.files import write_atomic
from silolink.identity import LOCAL
from silolink.rpc.channels import split_address
from silolink.rpc.guard import fixed_authenticator
from silolink.rpc.server import ServiceMount, bind, build_server, set_not_serving

from . import analytics, catalog, exchange, inference, local_api, registry, studies, training
from .catalog.store import Catalog
from .control.commands import CommandDispatcher
from .control.link import ControlLink
from .identity import load_identity
from .layout import AgentLayout
from .models.store import ModelStore
from .resources import resource_report

log = logging.getLogger(__name__)

# Each capability's ``attach(agent) -> list[ServiceMount]``: it opens its stores under the
# data directory, registers control-command handlers on ``agent.dispatcher`` and stop hooks,
# and returns the local-API services to mount. Capabilities add themselves here.
CAPABILITIES: list[Callable[[Agent], list[ServiceMount]]] = [
    studies.attach,  # first: the gate every command passes, which analytics and exchange also ask
    catalog.attach,
    inference.attach,
    registry.attach,
    training.attach,
    exchange.attach,
    analytics.attach,
]


def load_config(data_dir: Path, environ=None, **overrides) -> AgentConfig:
    layout = AgentLayout(Path(data_dir))
    cfg = config_mod.load(AgentConfig, layout.config, "SILOLINK_AGENT", environ)
    return config_mod.override(cfg, **overrides)


def check_local_listen(address: str, allow_remote: bool) -> None:
    """The local API is for the site's own systems: loopback or unix socket unless allowed."""
    if address.startswith("unix:") or allow_remote:
        return
    host, _ = split_address(address)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise errors.InvalidArgument(
            f"the local API would listen on {address}, which is not loopback; it has no authentication, "
            "so set allow_remote_local_api = true in agent.toml only behind a firewall you control"
        )


class Agent:
    def __init__(self, data_dir: Path, cfg: AgentConfig | None = None) -> None:
        self.layout = AgentLayout(Path(data_dir).resolve())
        self.config = cfg or load_config(self.layout.root)
        identity = load_identity(self.layout)  # fail early when not enrolled
        if not self.config.coordinator:
            raise errors.FailedPrecondition(f"{self.layout.config} names no coordinator; enroll first")
        check_local_listen(self.config.local_listen, self.config.allow_remote_local_api)
        self.site = identity.site
        self.dispatcher = CommandDispatcher()
        self.link = ControlLink(self.layout, self.config, self.dispatcher, lambda: resource_report(self.layout.root))
        self._stop_hooks: list[Callable[[], None]] = []
        self.metrics = None
        if self.config.metrics_listen:
            from silolink.metrics import Metrics  # prometheus_client only when asked for

            self.metrics = Metrics()
            self.metrics.gauge(
                "silolink_agent_connected", "1 while the control stream to the coordinator is up", "coordinator",
                lambda: {self.config.coordinator: float(self.link.status.state == "connected")},
            )  # fmt: skip
        # The site's data and models, shared by the capabilities (and by the CLI, through SQLite).
        self.catalog = Catalog.open(self.layout.catalog_db)
        self.models = ModelStore.open(self.layout.state_db, self.layout.model_blobs)
        status = local_api.AgentServicer(self.layout, self.config.coordinator, self.link.status)
        mounts = [local_api.mount(status)]
        for attach in CAPABILITIES:
            mounts += attach(self)
        mounts += load_service_extensions(AGENT_GROUP, ExtensionContext("agent", self.layout.root))
        self.server, self._health = build_server(
            mounts,
            fixed_authenticator(LOCAL),
            max_workers=self.config.local_max_workers,
            max_message_bytes=self.config.max_message_bytes,
            observer=self.metrics,
        )
        self.local_address = self.metrics_address = ""

    def start(self) -> Agent:
        if self.metrics is not None:  # first, so a port in use stops the agent before it serves
            self.metrics_address = self.metrics.serve(self.config.metrics_listen)
        address = self.layout.local_address(self.config.local_listen)
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)  # a socket left by a killed agent
        port = bind(self.server, address, None)
        self.server.start()
        if address.startswith("unix:"):
            os.chmod(address[5:], 0o660)
            self.local_address = address
        else:
            self.local_address = f"{address.rsplit(':', 1)[0]}:{port}"
        endpoints = {"local_address": self.local_address, "metrics_address": self.metrics_address, "pid": os.getpid()}
        write_atomic(self.layout.endpoints, json.dumps(endpoints).encode(), mode=0o644)
        self.link.start()
        threading.Thread(target=self._notify_when_connected, name="sd-notify", daemon=True).start()
        log.info(
            "agent for site %s: local API on %s, metrics on %s, dialling %s",
            self.site, self.local_address, self.metrics_address or "off", self.config.coordinator,
        )  # fmt: skip
        return self

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the agent stops, after the local API has drained."""
        self._stop_hooks.append(hook)

    def wait_connected(self, timeout_s: float) -> bool:
        return self.link.status.connected_once.wait(timeout_s)

    def _notify_when_connected(self) -> None:
        # systemd's "ready" means connected to the coordinator, not merely started.
        self.link.status.connected_once.wait()
        if self.link.status.state == "connected":
            sdnotify.notify("READY=1")

    def stop(self, grace_s: float | None = None) -> None:
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        sdnotify.notify("STOPPING=1")
        set_not_serving(self._health)
        self.link.stop(timeout_s=grace)
        self.server.stop(grace).wait()
        for hook in reversed(self._stop_hooks):
            hook()
        if self.metrics is not None:
            self.metrics.stop()
        self.layout.endpoints.unlink(missing_ok=True)
        address = self.local_address
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)
        log.info("agent stopped")
