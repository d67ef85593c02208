"""Scheduling by capacity: a queue of jobs placed on the sites that have room for them.

The logic (``Scheduler`` over a ``Fleet`` of sites) is plain Python and numpy; the
coordinator feeds it what sites declare and report, and the benchmark a simulated fleet.
"""

from .model import JobNeeds, Placement, SiteCapacity, StudyShare, Waiting
from .scheduler import POLICIES, Scheduler

__all__ = ["POLICIES", "JobNeeds", "Placement", "Scheduler", "SiteCapacity", "StudyShare", "Waiting"]
