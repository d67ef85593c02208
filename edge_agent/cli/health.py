"""``health``: defined in ``edge_agent.healthcheck`` so health checks can run it alone."""

from __future__ import annotations

from ..healthcheck import health

__all__ = ["health"]
