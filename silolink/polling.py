"""Waiting for a condition by polling, for the demo, benchmarks and tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from silolink import errors

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    DeadlineExceeded naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise errors.DeadlineExceeded(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
