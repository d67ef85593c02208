"""The app registry's logic: publish Flower App Bundles (checked, stored by SHA-256, signed),
list and show them, resolve ``NAME[:VERSION]`` for a job.

A bundle is checked by ``silolink.apps.fab`` (the same checks the sites run): size, file
count and unpacked bytes within limits, no absolute paths, nothing outside the root, no
symlinks or special files, every file matching ``.info/CONTENT``, and a ``pyproject.toml``
that passes Flower's own validation. Its manifest is signed with the model-signing key
(``silolink.manifests.encode_app``), so sites verify apps exactly as they verify models.
Blobs live under ``apps/blobs/<sha256>.fab``; a version never changes once published.

silolink's built-in apps (``silolink_apps/*``) are published on first use, built from the
installed code; they are marked ``builtin`` and re-published when that code changes (the
sites run their own built-in copy, never a downloaded one).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import silolink_apps
from silolink import errors, manifests
from silolink.apps import fab
from silolink.files import write_atomic
from silolink.onnx_models import check_name

from ..audit.store import AuditLog
from .store import AppStore, AppVersion

log = logging.getLogger(__name__)
BUILTIN_ROOT = Path(silolink_apps.__file__).resolve().parent


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    return check_name("app name", name), (check_name("version", version) if version else None)


def builtin_dirs(root: Path = BUILTIN_ROOT) -> dict[str, Path]:
    """Built-in app name -> its directory (each holds a Flower pyproject.toml)."""
    import tomllib

    found = {}
    for pyproject in sorted(root.glob("*/pyproject.toml")):
        try:
            found[tomllib.loads(pyproject.read_text())["project"]["name"]] = pyproject.parent
        except (OSError, KeyError, ValueError) as e:
            log.error("built-in app at %s is unreadable: %s", pyproject.parent, e)
    return found


class AppRegistry:
    """Published app versions, independent of transport."""

    def __init__(
        self,
        store: AppStore,
        blobs: Path,
        signer: manifests.Signer,
        audit: AuditLog,
        limits: fab.FabLimits | None = None,
        clock: Callable[[], float] = time.time,
        builtin_root: Path = BUILTIN_ROOT,
    ) -> None:
        self.store = store
        self.blobs = Path(blobs)
        self.signer = signer
        self.limits = limits or fab.FabLimits()
        self._audit = audit
        self._clock = clock
        self._builtin_root = builtin_root
        self._builtins_published: set[str] = set()
        self._builtin_lock = threading.Lock()

    # -- publish -------------------------------------------------------------------------
    def push(self, data: bytes, creator: str, builtin: bool = False) -> tuple[AppVersion, bool]:
        """Check, store and sign a bundle: (the version, whether it is new).

        The same bundle again returns the version already published; a different bundle
        under a taken name and version is refused (versions never change), except for
        built-in apps, which follow the installed code.
        """
        try:
            info = fab.inspect_fab(data, self.limits)
        except errors.ResourceExhausted as e:  # over a limit: the bundle is what is wrong
            raise errors.InvalidArgument(e.message) from None
        check_name("app name", info.name)
        check_name("version", info.version)
        if not builtin and info.name in builtin_dirs(self._builtin_root):
            raise errors.InvalidArgument(
                f"app name {info.name!r} is taken by silolink's built-in app; rename [project] name in pyproject.toml"
            )
        _check_config(info.config)
        self.blobs.mkdir(parents=True, exist_ok=True)
        with self.store.atomic():
            existing = self.store.get(info.name, info.version)
            if existing is not None and existing.sha256 == info.sha256:
                return existing, False
            if existing is not None and not (builtin and existing.builtin):
                raise errors.AlreadyExists(
                    f"app {existing.ref} is already published with a different bundle (sha256 {existing.sha256[:12]}); "
                    "versions never change: raise [project] version in the app's pyproject.toml and push again"
                )
            now = self._clock()
            fields: dict[str, Any] = {
                "name": info.name,
                "version": info.version,
                "sha256": info.sha256,
                "size": info.size,
                "publisher": info.publisher,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in info.files],
                "dependencies": list(info.dependencies),
                "config": dict(info.config),
                "serverapp": info.serverapp,
                "clientapp": info.clientapp,
                "description": _description(data),
                "creator": creator,
                "created_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
                "builtin": builtin,
            }
            manifest = manifests.encode_app(fields)
            record = AppVersion(
                name=info.name,
                version=info.version,
                sha256=info.sha256,
                size_bytes=info.size,
                publisher=info.publisher,
                files=fields["files"],
                dependencies=fields["dependencies"],
                config=fields["config"],
                serverapp=info.serverapp,
                clientapp=info.clientapp,
                description=fields["description"],
                creator=creator,
                created_at=now,
                builtin=builtin,
                manifest=manifest,
                manifest_signature=self.signer.sign(manifest),
            )
            if existing is not None:  # a built-in app whose installed code changed
                self.store.db["apps_versions"].delete((existing.name, existing.version))
            self.store.add(record)
            self._audit.record(creator or "coordinator", "app.push", record.ref, sha256=info.sha256, size=info.size,
                               publisher=info.publisher, builtin=builtin)  # fmt: skip
            self._write_blob(info.sha256, data)  # last: a failure above rolls back without a stray blob
        log.info("published app %s (sha256 %s, %d bytes)", record.ref, info.sha256[:12], info.size)
        return record, True

    def _write_blob(self, sha256: str, data: bytes) -> None:
        path = self.blob_path(sha256)
        if not path.exists():
            write_atomic(path, data, mode=0o644)

    def publish_builtin(self, name: str) -> AppVersion | None:
        """Publish the built-in app ``name`` from the installed code (once per process)."""
        with self._builtin_lock:
            directory = builtin_dirs(self._builtin_root).get(name)
            if directory is None:
                return None
            if name not in self._builtins_published:
                record, created = self.push(fab.build_fab(directory), creator="coordinator", builtin=True)
                self._builtins_published.add(name)
                return record
        found = [v for v in self.store.versions(name) if v.builtin]
        return found[-1] if found else None

    # -- read ----------------------------------------------------------------------------
    def list(self) -> list[AppVersion]:
        # Listing is a use: the built-in apps show up (with their run_config) before any job
        # ran them, so the console's start form and `apps list` offer them too.
        for name in builtin_dirs(self._builtin_root):
            self.publish_builtin(name)
        return self.store.versions()

    def show(self, name: str, version: str | None = None) -> list[AppVersion]:
        self.publish_builtin(name)
        if version:
            return [self.get(name, version)]
        found = self.store.versions(name)
        if not found:
            raise errors.NotFound(f"no app named {name!r} is published; `cloud-coordinator apps list` shows them")
        return found

    def get(self, name: str, version: str) -> AppVersion:
        record = self.store.get(name, version)
        if record is None:
            known = [v.version for v in self.store.versions(name)]
            if not known:
                raise errors.NotFound(f"no app named {name!r} is published; `cloud-coordinator apps list` shows them")
            raise errors.NotFound(f"app {name!r} has no version {version!r}; published: {', '.join(known)}")
        return record

    def resolve(self, name: str, version: str | None = None) -> AppVersion:
        """The version a job runs: the one named, or the one published last.

        A built-in app's name resolves to the installed code's bundle, published on first use.
        """
        check_name("app name", name)
        if version:
            check_name("version", version)
        builtin = self.publish_builtin(name)
        if builtin is not None and (not version or version == builtin.version):
            return builtin
        if version:
            return self.get(name, version)
        found = self.store.versions(name)
        if not found:
            raise errors.NotFound(
                f"no app named {name!r} is published; push it with `cloud-coordinator apps push DIR` "
                "(`apps list` shows what is published)"
            )
        return max(found, key=lambda v: v.created_at)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.fab"


def _check_config(config: dict[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise errors.InvalidArgument(f"the app's [tool.flwr.app.config] {key} = {value} is not a finite number")


def _description(data: bytes) -> str:
    """``[project] description`` of a checked bundle (fab.FabInfo does not carry it)."""
    import io
    import tomllib
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        project = tomllib.loads(archive.read(fab.CONFIG_FILE).decode()).get("project", {})
    description = project.get("description", "")
    return description[:500] if isinstance(description, str) else ""
