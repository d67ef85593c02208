"""Runs Flower messages from the coordinator through the apps this site approved.

The site decides. A job's app runs only if it is
- an app installed here (``edge-agent apps install`` or ``approve``), and when the job
  names a version or a bundle hash, exactly that version with exactly that hash; or
- code already in the agent's environment that ``[training] apps`` allows (the built-in
  ``tabular``/``tabular-secagg``, or ``NAME=package.module:attribute``);
and its dataset is allowed for training. Anything else is refused with a reason the
operator sees, before any code runs.

Each job's ClientApp runs in a worker process of its own (``workers.py``) with one Flower
``Context`` for the job: ``node_config`` holds ``dataset`` and ``catalog`` (the path of the
site's catalog), ``run_config`` the app's ``[tool.flwr.app.config]`` with the job's
overrides on top. A failure inside an app reaches the coordinator as its exception type
and a reference only; details stay in the site's log, since a message can quote the
site's data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.config import TrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb

from ..apps.store import AppStore, InstalledApp
from ..catalog.reading import allowed_sensitive, node_config_for
from ..catalog.store import Catalog
from .workers import AppFailed, WorkerPool, WorkerSpec

log = logging.getLogger(__name__)
BUILT_IN = {
    "tabular": "edge_agent.training.tabular:app",
    "tabular-secagg": "edge_agent.training.tabular_secagg:app",
}


def allowed_apps(config: TrainingConfig) -> dict[str, str]:
    """App name -> "module:attribute" from the site's allow-list."""
    apps = {}
    for entry in config.apps:
        name, _, target = entry.partition("=")
        name = name.strip()
        apps[name] = target.strip() if target else BUILT_IN.get(name, name)
    return apps


def run_config(defaults: dict[str, Any], overrides: dict[str, Any], label: str) -> dict[str, Any]:
    """The app's declared config with the job's overrides on top (Flower's own fusing)."""
    if not defaults:
        return dict(overrides)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise errors.InvalidArgument(
            f"the job sets run_config key(s) {', '.join(unknown)} that app {label} does not declare "
            f"in [tool.flwr.app.config] (it declares {', '.join(sorted(defaults))})"
        )
    return {**defaults, **overrides}


class FlowerHost:
    def __init__(
        self,
        config: TrainingConfig,
        catalog: Catalog,
        catalog_path: Path,
        apps: AppStore,
        sensitive_for_apps: tuple[str, ...] = (),
    ) -> None:
        self._config = config
        self._sensitive_for_apps = sensitive_for_apps
        self._allowed = allowed_apps(config)
        self._datasets = set(config.datasets)
        self._catalog = catalog
        self._catalog_path = catalog_path
        self._apps = apps
        self.workers = WorkerPool(config.max_workers, config.worker_idle_s)

    def handle(self, task: pb.FlowerTask) -> pb.FlowerReply:
        try:
            spec = self.spec(task)
        except errors.SiloError:
            self.workers.end(task.job_id)  # e.g. the app was removed mid-job: it runs no further
            raise
        timeout_s = self._config.message_timeout_s
        asked = float(getattr(task, "timeout_s", 0.0) or 0.0)
        if asked > 0:
            timeout_s = min(timeout_s, asked + 1.0)  # the coordinator stops waiting then; so does the site
        try:
            reply = self.workers.run(task.job_id, spec, task.message, timeout_s)
        except AppFailed as e:
            raise e.public from None
        return pb.FlowerReply(message=reply)

    def stop(self) -> None:
        self.workers.stop()

    def spec(self, task: pb.FlowerTask) -> WorkerSpec:
        """What runs the task's message, once the site's policy allows it."""
        self.check_dataset(task.dataset)
        version = str(getattr(task, "app_version", "") or "")
        sha256 = str(getattr(task, "app_sha256", "") or "")
        overrides = _overrides(task)
        allowed = allowed_sensitive(self._sensitive_for_apps, task.app, task.dataset)
        node_config = node_config_for(self._catalog_path, task.dataset, allowed)
        if not (version or sha256) and task.app in self._allowed:
            return WorkerSpec(task.app, self._allowed[task.app], None, task.run_id, task.node_id, node_config,
                              run_config({}, overrides, task.app))  # fmt: skip
        app = self.approved(task.app, version, sha256)
        return WorkerSpec(app.ref, app.clientapp, str(app.path), task.run_id, task.node_id, node_config,
                          run_config(app.config, overrides, app.ref))  # fmt: skip

    def check_dataset(self, dataset: str) -> None:
        if dataset not in self._datasets:
            raise errors.PermissionDenied(
                f"dataset {dataset!r} is not allowed for training at this site (training.datasets in agent.toml)"
            )
        self._catalog.describe(dataset)  # NotFound, naming what the catalog has

    def approved(self, name: str, version: str, sha256: str) -> InstalledApp:
        """The installed app the job names, if the site approved exactly that code."""
        installed = self._apps.find(name, version or None)
        if sha256:
            matching = [a for a in installed if a.sha256 == sha256]
            if not matching and installed:
                have = ", ".join(f"{a.ref} (sha256 {a.sha256[:12]})" for a in installed)
                raise errors.PermissionDenied(
                    f"the job's app {name}{':' + version if version else ''} has sha256 {sha256[:12]}, which this "
                    f"site has not approved; it approved {have}. The site runs only code it approved"
                )
            installed = matching
        if not installed:
            ref = f"{name}:{version}" if version else name
            allowed = ", ".join(sorted(self._allowed)) or "none"
            raise errors.PermissionDenied(
                f"app {ref!r} is not installed at this site; a site admin approves it with "
                f"`edge-agent apps approve {name}:VERSION` (training.apps allows: {allowed})"
            )
        if len(installed) > 1:
            versions = ", ".join(a.version for a in installed)
            raise errors.FailedPrecondition(
                f"app {name!r} is installed here in several versions ({versions}); the job must name one"
            )
        app = installed[0]
        if not app.present:
            raise errors.FailedPrecondition(
                f"app {app.ref} is approved at this site but its files are missing; the site admin reinstalls it"
            )
        return app


def _overrides(task: pb.FlowerTask) -> dict[str, Any]:
    """The job's run_config overrides (none until the coordinator sends them)."""
    field = getattr(task, "run_config", None)
    if not field:
        return {}
    return {key: _config_value(value) for key, value in field.items()}


def _config_value(value: Any) -> Any:
    if hasattr(value, "WhichOneof"):  # a oneof of scalar kinds
        kind = value.WhichOneof("value") or value.WhichOneof("kind")
        return getattr(value, kind) if kind else None
    return value
