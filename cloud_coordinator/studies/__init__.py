"""Studies: collaborations that scope every job, query, agreement and rollout.

``coordinator.studies`` (a ``StudyService``) answers the other capabilities' two questions:
may this caller do this in the study (``authorize``), and which of these sites are in it
(``scope``). The sites decide again on their side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

from .service import DEFAULT, StudyService, study_name

if TYPE_CHECKING:
    from ..app import Coordinator

__all__ = ["DEFAULT", "StudyService", "attach", "study_name"]


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .servicer import mounts
    from .store import StudyStore

    studies = StudyService(StudyStore(coordinator.db, coordinator.db_lock), coordinator.sites, coordinator.audit.record)
    coordinator.studies = studies  # type: ignore[attr-defined]
    return mounts(studies)
