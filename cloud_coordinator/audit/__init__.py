"""The audit log: an append-only, hash-chained record of every security-relevant action,
each entry signed by the coordinator's audit key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    """Serve the chain to operators and sites so they can verify it themselves."""
    from .servicer import mount

    return [mount(coordinator.audit)]
