"""Exponential backoff with jitter, so a fleet does not reconnect in lock-step."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``; each is drawn from the upper
    half of its range ("equal jitter": spread out, but never near zero)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempt = 0
