"""Admission of new control streams at a bounded rate, so a reconnect storm (every site
of a fleet dialling back after a restart) is taken in at a pace the coordinator keeps up
with. Streams over the rate wait (a coroutine each, no thread) instead of being refused;
the control class's stream limit bounds how many may wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class AdmissionRate:
    """A rate limit with a burst allowance (GCRA, "virtual scheduling"). Used only on the
    event loop, so it needs no lock."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError("the admission rate and burst must be positive")
        self.rate_per_s = rate_per_s
        self._interval = 1.0 / rate_per_s
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._theoretical = 0.0
        self.waited = 0

    def delay(self) -> float:
        """Reserve the next admission; how long to wait for it (0 within the burst)."""
        now = self._clock()
        start = max(self._theoretical, now)
        self._theoretical = start + self._interval
        return max(0.0, start - now - self._tolerance)

    async def admit(self) -> None:
        wait = self.delay()
        if wait > 0:
            self.waited += 1
            await asyncio.sleep(wait)
