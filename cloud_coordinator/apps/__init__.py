"""Flower apps at the coordinator: publish bundles (signed like models), offer them to sites.

Operators push a Flower app (a directory in Flower's layout, built into a .fab by Flower's
own builder, or a .fab) with ``cloud-coordinator apps push``; sites list what is offered and
download the bundles their admins approve. Training jobs run a published app by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    """Build the app registry on coordinator.db; expose it as ``coordinator.apps``."""
    from silolink.apps.fab import FabLimits

    from ..registry.signing import ensure_signer
    from .registry import AppRegistry
    from .servicer import AppDistributionServicer, AppRegistryServicer, mounts
    from .store import AppStore

    limits = coordinator.config.apps
    apps = AppRegistry(
        # One lock with the audit log: both write the same connection inside transactions.
        AppStore(coordinator.db, lock=coordinator.audit.lock),
        coordinator.layout.root / "apps" / "blobs",
        ensure_signer(coordinator.layout, coordinator.ca),  # the model-signing key signs apps too
        coordinator.audit,
        FabLimits(limits.max_bundle_bytes, limits.max_unpacked_bytes, limits.max_files),
    )
    coordinator.apps = apps
    return mounts(AppRegistryServicer(apps), AppDistributionServicer(apps))
