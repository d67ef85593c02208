"""Installing an app at the site: the one path for a local directory or .fab and for an
approved bundle from the coordinator.

Checks come first and nothing is written until they pass: the bundle (``silolink.apps.fab``:
paths, symlinks, sizes, CONTENT hashes, a valid Flower pyproject), a ClientApp component
whose module the bundle holds, no other content already installed under that name and
version, and every declared dependency installed here. Then the files are unpacked into
place in one rename and the approval is recorded; if recording fails, the files go again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from silolink import errors
from silolink.apps.fab import FabInfo, FabLimits, build_fab, component_file, read_fab, write_files
from silolink.config import AppsConfig

from .deps import import_failures, missing_dependencies
from .store import AppStore, InstalledApp

log = logging.getLogger(__name__)


def limits_of(config: AppsConfig) -> FabLimits:
    return FabLimits(config.max_bundle_bytes, config.max_unpacked_bytes, config.max_files)


def read_source(path: Path, limits: FabLimits) -> bytes:
    """The bundle for ``path``: a .fab file as it is, or a directory built into one."""
    path = Path(path)
    if path.is_dir():
        return build_fab(path)
    if not path.is_file():
        raise errors.NotFound(f"{path} is neither a Flower app directory nor a .fab file")
    size = path.stat().st_size
    if size > limits.max_bundle_bytes:
        raise errors.ResourceExhausted(
            f"{path} is {size:,} bytes, over the limit of {limits.max_bundle_bytes:,} bytes ([apps] max_bundle_bytes)"
        )
    return path.read_bytes()


def check_runnable(info: FabInfo) -> None:
    """The site runs the app's ClientApp: the bundle must declare one and hold its module."""
    if not info.clientapp:
        raise errors.InvalidArgument(f"app {info.ref} declares no clientapp in [tool.flwr.app.components]")
    if component_file(info, "clientapp") is None:
        raise errors.InvalidArgument(
            f"app {info.ref}'s clientapp {info.clientapp!r} names a module the bundle does not hold"
        )


def install_bundle(
    store: AppStore, data: bytes, source: str, limits: FabLimits, expect: tuple[str, str] | None = None
) -> tuple[InstalledApp, bool]:
    """Check and install a bundle: (the installed app, whether it was new).

    ``expect`` is the (name, version) a signed manifest named: the bundle must declare them.
    """
    info, files = read_fab(data, limits)
    if expect is not None and (info.name, info.version) != expect:
        raise errors.PermissionDenied(
            f"the bundle declares {info.ref} but its signed manifest names {expect[0]}:{expect[1]}; refusing it"
        )
    check_runnable(info)
    existing = store.check_new(info.name, info.version, info.sha256)
    if existing is not None and existing.present:
        return existing, False
    missing = missing_dependencies(info.dependencies)
    if missing:
        raise errors.FailedPrecondition(
            f"app {info.ref} needs packages this site's environment lacks: {'; '.join(missing)}. "
            "Install them into the agent's environment (the agent installs nothing itself), then try again"
        )
    broken = import_failures(info.dependencies)
    if broken:
        raise errors.FailedPrecondition(
            f"app {info.ref} needs packages that are installed but do not import in this site's environment: "
            f"{'; '.join(broken)}. Repair them in the agent's environment (the agent installs nothing itself), "
            "then try again"
        )
    destination = store.directory(info.name, info.version, info.sha256)
    if destination.exists():  # left by an install cut short before it was recorded
        shutil.rmtree(destination)
    write_files(files, destination)
    try:
        app = store.record(info, source)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    log.info("installed app %s (sha256 %s, from %s)", info.ref, info.sha256[:12], source)
    return app, True
