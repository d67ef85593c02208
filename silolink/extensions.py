"""The extension point: mount your own gRPC services on the agent or the coordinator.

A developer writes a .proto, generates its code, implements the servicer and exposes a
factory through an entry point::

    [project.entry-points."silolink.coordinator_services"]
    notes = "sitenotes.service:mount"

The factory receives an :class:`ExtensionContext` and returns one :class:`ServiceMount`
(or several). The server mounts it behind the same mTLS, authentication, permission,
logging and metrics checks as the built-in services; every method needs a rule naming the
roles that may call it. Inside a handler, :func:`current_identity` says who is calling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from silolink import errors
from silolink.identity import Identity, Role
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

__all__ = [
    "AGENT_GROUP",
    "COORDINATOR_GROUP",
    "ExtensionContext",
    "Identity",
    "Role",
    "ServiceMount",
    "current_identity",
    "load_service_extensions",
]

AGENT_GROUP = "silolink.agent_services"
COORDINATOR_GROUP = "silolink.coordinator_services"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtensionContext:
    """What an extension's factory is told about the daemon it joins."""

    side: str  # "agent" or "coordinator"
    data_dir: Path  # the daemon's data directory; keep extension state under a subfolder


def load_service_extensions(group: str, context: ExtensionContext) -> list[ServiceMount]:
    """Every ServiceMount the installed entry points of ``group`` provide.

    A broken extension stops the daemon from starting with a message naming it: serving
    without a service the operator installed would be a silent failure.
    """
    mounts: list[ServiceMount] = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            result = ep.load()(context)
            found = [result] if isinstance(result, ServiceMount) else list(_iterable(result))
            if not found or not all(isinstance(m, ServiceMount) for m in found):
                raise TypeError("the factory must return a ServiceMount or a list of them")
            for mount in found:
                mount.permissions()  # every method must have a rule
        except Exception as e:  # noqa: BLE001 - reported with the extension's name
            raise errors.FailedPrecondition(f"extension {ep.name!r} ({ep.value}) cannot be loaded: {e}") from e
        log.info("mounted extension %s: %s", ep.name, ", ".join(m.name for m in found))
        mounts += found
    return mounts


def _iterable(value: object) -> Iterable[object]:
    if isinstance(value, Iterable):
        return value
    raise TypeError(f"the factory returned {type(value).__name__}, not a ServiceMount")
