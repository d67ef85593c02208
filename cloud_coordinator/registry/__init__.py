"""The model registry: signed model versions, and rollouts of them to sites."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    """Build the registry on coordinator.db; expose it as ``coordinator.registry``.

    ``coordinator.registry.push_file(path, name, version=None, description="",
    creator="coordinator", source_job="")`` registers a model from inside the coordinator
    (a finished training job, for example).
    """
    from .models import ModelRegistry
    from .rollouts import Rollouts
    from .servicer import DistributionServicer, RegistryServicer, mounts
    from .signing import ensure_signer
    from .store import RegistryStore

    # One lock with the audit log: both write the same connection inside transactions.
    store = RegistryStore(coordinator.db, lock=coordinator.audit.lock)
    signer = ensure_signer(coordinator.layout, coordinator.ca)
    models = ModelRegistry(store, coordinator.layout.root / "registry" / "blobs", signer, coordinator.audit)
    limits = coordinator.config.limits
    rollouts = Rollouts(
        store,
        models,
        coordinator.sites,
        coordinator.hub,
        coordinator.audit,
        concurrency=limits.rollout_concurrency,
        slot_timeout_s=limits.rollout_slot_timeout_s,
    )
    models.rollouts = rollouts
    rollouts.studies = getattr(coordinator, "studies", None)
    coordinator.on_stop(rollouts.stop)
    coordinator.registry = models
    coordinator.distribution = DistributionServicer(rollouts)
    return mounts(RegistryServicer(models, rollouts), coordinator.distribution)
