"""``health``: defined in ``cloud_coordinator.healthcheck`` so probes can run it alone."""

from __future__ import annotations

from ..healthcheck import health

__all__ = ["health"]
