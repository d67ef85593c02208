"""Scheduling by capacity: a queue of jobs placed on the sites that have room for them.

The logic (``Scheduler`` over a ``Fleet`` of sites) is plain Python and numpy; the
coordinator feeds it what sites declare and report (``WorkQueue``, ``coordinator.queue``),
and the benchmark a simulated fleet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

from .model import JobNeeds, Placement, SiteCapacity, StudyShare, Waiting
from .scheduler import POLICIES, Scheduler

if TYPE_CHECKING:
    from ..app import Coordinator

__all__ = ["POLICIES", "JobNeeds", "Placement", "Scheduler", "SiteCapacity", "StudyShare", "Waiting", "attach"]


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    """The work queue (``coordinator.queue``), its metrics and QueueService."""
    from .service import WorkQueue
    from .servicer import mount
    from .store import QueueStore

    cfg = coordinator.config.scheduling
    queue = WorkQueue(
        QueueStore(coordinator.db, coordinator.db_lock), coordinator.studies, coordinator.sites, coordinator.hub,
        tick_s=cfg.tick_s, offer_timeout_s=cfg.offer_timeout_s, heartbeat_load=cfg.heartbeat_load,
        decline_cooldown_s=cfg.decline_cooldown_s,
    )  # fmt: skip
    coordinator.queue = queue  # type: ignore[attr-defined]
    # The loop starts when the first capability registers its launcher (queue.register), so
    # work restored from the database is never placed before something can launch it.
    coordinator.on_stopping(queue.stop)

    def by_study(state: str) -> dict[str, float]:
        waiting, running, _ = queue.snapshot()
        items = waiting if state == "queued" else running
        counts: dict[str, float] = dict.fromkeys(coordinator.studies.weights(), 0.0)
        for item in items:
            counts[item.study] = counts.get(item.study, 0.0) + 1
        return counts

    metrics = coordinator.metrics
    metrics.gauge(
        "silolink_queue_queued_jobs", "Jobs waiting in the queue, by study", "study", lambda: by_study("queued")
    )
    metrics.gauge("silolink_queue_running_jobs", "Jobs the queue placed and that run, by study", "study",
                  lambda: by_study("running"))  # fmt: skip
    metrics.gauge("silolink_study_dominant_share", "Each study's dominant share of reserved fleet resources over "
                  "its weight (fair share: the lowest goes next)", "study", lambda: queue.snapshot()[2])  # fmt: skip
    return [mount(queue, coordinator.studies)]
