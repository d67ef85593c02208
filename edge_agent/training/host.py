"""Runs Flower messages from the coordinator through the apps this site approved.

The site decides. A job's app runs only if it is
- an app installed here (``edge-agent apps install`` or ``approve``), and when the job
  names a version or a bundle hash, exactly that version with exactly that hash; or
- code already in the agent's environment that ``[training] apps`` allows (the built-in
  ``tabular``/``tabular-secagg``, or ``NAME=package.module:attribute``);
and its dataset is allowed for training. Anything else is refused with a reason the
operator sees, before any code runs.

Each job's ClientApp runs in a worker process of its own (``workers.py``) with one Flower
``Context`` for the job: ``node_config`` holds the ``dataset``'s name and nothing about where
the site keeps it (the app reads its rows through the agent, which hides the columns the site
marked sensitive unless ``[catalog] sensitive_for_apps`` allows them for this app),
``run_config`` the app's ``[tool.flwr.app.config]`` with the job's overrides on top. A
failure inside an app reaches the coordinator as its exception type and a reference only;
details stay in the site's log, since a message can quote the site's data.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import tomllib
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.config import TrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.protos import config_from_proto

from ..apps.store import AppStore, InstalledApp
from ..catalog.reading import allowed_sensitive, node_config_for
from ..catalog.store import Catalog
from .data_service import DataGrant
from .workers import AppFailed, WorkerPool, WorkerSpec

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def builtin_apps() -> dict[str, tuple[str, dict[str, Any]]]:
    """silolink's built-in apps, from their Flower app directories (``silolink_apps/*/``):
    name -> (ClientApp reference, declared run_config)."""
    from flwr.common.config import flatten_dict

    spec = importlib.util.find_spec("silolink_apps")
    apps: dict[str, tuple[str, dict[str, Any]]] = {}
    for root in spec.submodule_search_locations if spec and spec.submodule_search_locations else []:
        for pyproject in sorted(Path(root).glob("*/pyproject.toml")):
            config = tomllib.loads(pyproject.read_text())
            app = config["tool"]["flwr"]["app"]
            apps[config["project"]["name"]] = (app["components"]["clientapp"], flatten_dict(app.get("config", {})))
    return apps


def allowed_apps(config: TrainingConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """App name -> (ClientApp "module:attribute", declared run_config) from the site's allow-list."""
    builtin = builtin_apps()
    apps = {}
    for entry in config.apps:
        name, _, target = entry.partition("=")
        name = name.strip()
        if target:
            apps[name] = (target.strip(), {})
        elif name in builtin:
            apps[name] = builtin[name]
        else:
            apps[name] = (name, {})  # a bare "package.module:attribute"
    return apps


def run_config(declared: dict[str, Any], given: dict[str, Any], label: str) -> dict[str, Any]:
    """The job's run_config over what the app declares in [tool.flwr.app.config]."""
    if not declared:
        return dict(given)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise errors.InvalidArgument(
            f"the job sets run_config key(s) {', '.join(unknown)} that app {label} does not declare "
            f"in [tool.flwr.app.config] (it declares {', '.join(sorted(declared))})"
        )
    return {**declared, **given}


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
        self._datasets = set(config.datasets)
        self._catalog = catalog
        self._catalog_path = catalog_path
        self._apps = apps
        self.workers = WorkerPool(config.max_workers, config.worker_idle_s)

    @functools.cached_property
    def _allowed(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return allowed_apps(self._config)  # on the first message: reading the built-ins imports flwr

    def handle(self, task: pb.FlowerTask) -> pb.FlowerReply:
        try:
            spec = self.spec(task)
        except errors.SiloError:
            self.workers.end(task.job_id)  # e.g. the app was removed mid-job: it runs no further
            raise
        timeout_s = self._config.message_timeout_s
        if task.timeout_s > 0:
            timeout_s = min(timeout_s, task.timeout_s + 1.0)  # the coordinator stops waiting then; so does the site
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
        given = config_from_proto(task.run_config)
        allowed = allowed_sensitive(self._sensitive_for_apps, task.app, task.dataset)
        ids = (task.run_id, task.node_id, node_config_for(task.dataset))
        rest = {
            "data": DataGrant(self._catalog_path, task.dataset, tuple(allowed)),
            "environment": self._config.app_environment,
        }
        if not (task.app_version or task.app_sha256) and task.app in self._allowed:
            reference, declared = self._allowed[task.app]
            return WorkerSpec(task.app, reference, None, *ids, run_config(declared, given, task.app), **rest)
        app = self.approved(task.app, task.app_version, task.app_sha256)
        return WorkerSpec(app.ref, app.clientapp, str(app.path), *ids, run_config(app.config, given, app.ref), **rest)

    def start_job(self, command: pb.StartFlowerJob) -> pb.StartFlowerJobResult:
        """The coordinator says a job started: start its ClientApp now, under the same checks as
        its messages, so the job's first round does not wait for the worker's fork and the app's
        import. A refusal here changes nothing: the job's first message is refused the same way."""
        spec = self.spec(command.task)
        self.workers.prepare(command.task.job_id, spec)
        return pb.StartFlowerJobResult()

    def end_job(self, command: pb.EndFlowerJob) -> pb.EndFlowerJobResult:
        """The coordinator says a job ended: its ClientApp worker and Context go at once."""
        self.workers.end(command.job_id)
        return pb.EndFlowerJobResult()

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
