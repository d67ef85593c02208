"""Runs Flower messages from the coordinator through the apps this site installed.

The site decides: the app must be in its allow-list and the dataset allowed for training.
Each job keeps one Flower ``Context`` across its messages (stateful mods need it).
Failures inside an app are reported by kind only; details stay in the site's log, since an
exception message can quote the site's data.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.config import TrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb

from ..catalog.store import Catalog

log = logging.getLogger(__name__)
BUILT_IN = {
    "tabular": "edge_agent.training.tabular:app",
    "tabular-secagg": "edge_agent.training.tabular_secagg:app",
}
MAX_CONTEXTS = 16


def allowed_apps(config: TrainingConfig) -> dict[str, str]:
    """App name -> "module:attribute" from the site's allow-list."""
    apps = {}
    for entry in config.apps:
        name, _, target = entry.partition("=")
        name = name.strip()
        apps[name] = target.strip() if target else BUILT_IN.get(name, name)
    return apps


class FlowerHost:
    def __init__(self, config: TrainingConfig, catalog: Catalog, catalog_path: Path) -> None:
        self._apps = allowed_apps(config)
        self._datasets = set(config.datasets)
        self._catalog = catalog
        self._catalog_path = catalog_path
        self._loaded: dict[str, Any] = {}
        self._contexts: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, app: str, dataset: str) -> None:
        if app not in self._apps:
            allowed = ", ".join(sorted(self._apps)) or "none"
            raise errors.PermissionDenied(
                f"app {app!r} is not installed at this site (training.apps allows: {allowed})"
            )
        if dataset not in self._datasets:
            raise errors.PermissionDenied(
                f"dataset {dataset!r} is not allowed for training at this site (training.datasets in agent.toml)"
            )
        self._catalog.describe(dataset)  # NotFound, naming what the catalog has

    def handle(self, task: pb.FlowerTask) -> pb.FlowerReply:
        from flwr.app import Context, RecordDict
        from flwr.common.serde import message_from_proto, message_to_proto
        from flwr.proto.message_pb2 import Message as MessageProto

        self.check(task.app, task.dataset)
        app = self._app(task.app)
        proto = MessageProto()
        try:
            proto.ParseFromString(task.message)
            message = message_from_proto(proto)
        except Exception:  # noqa: BLE001 - protobuf and flwr raise various types
            raise errors.InvalidArgument("the Flower message could not be decoded") from None
        with self._lock:
            context = self._contexts.get(task.job_id)
            if context is None:
                node_config = {"catalog": str(self._catalog_path), "dataset": task.dataset}
                context = Context(task.run_id, task.node_id, node_config, RecordDict(), {})
                self._contexts[task.job_id] = context
                while len(self._contexts) > MAX_CONTEXTS:
                    self._contexts.popitem(last=False)
            self._contexts.move_to_end(task.job_id)
        try:
            reply = app(message, context)
        except Exception as e:  # noqa: BLE001 - an app failure must not take the agent down
            from .tabular import AppInputError

            if isinstance(e, AppInputError):
                raise errors.FailedPrecondition(f"app {task.app}: {e}") from None
            if isinstance(e, errors.SiloError):  # silolink's own errors carry safe messages
                raise
            ref = uuid.uuid4().hex[:12]
            log.exception("app %s failed on %s for job %s (ref %s)", task.app, task.dataset, task.job_id, ref)
            raise errors.Internal(
                f"app {task.app} failed ({type(e).__name__}); details in the site's agent log (ref {ref})"
            ) from None
        return pb.FlowerReply(message=message_to_proto(reply).SerializeToString())

    def _app(self, name: str):
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
        target = self._apps[name]
        module_name, _, attribute = target.partition(":")
        try:
            app = getattr(importlib.import_module(module_name), attribute or "app")
        except (ImportError, AttributeError) as e:
            log.error("app %s (%s) cannot be loaded: %s", name, target, e)
            raise errors.FailedPrecondition(f"app {name!r} is allowed here but cannot be loaded ({target})") from None
        with self._lock:
            self._loaded[name] = app
        return app
