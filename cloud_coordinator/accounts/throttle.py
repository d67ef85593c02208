"""Failed-login throttling: after too many failures for one account or from one address,
further attempts are refused for a while without checking the password at all."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from silolink import errors


class LoginThrottle:
    """Counts failures per key (``account:NAME``, ``address:IP``) in a sliding window."""

    def __init__(
        self, max_failures: int, window_s: float, lockout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, keys: Iterable[str]) -> None:
        """Raise ResourceExhausted if any key is locked out."""
        now = self._clock()
        with self._lock:
            wait = max((self._locked_until.get(k, 0.0) - now for k in keys), default=0.0)
        if wait > 0:
            raise errors.ResourceExhausted(
                f"too many failed logins; try again in {int(wait) + 1} s",
            )

    def failed(self, keys: Iterable[str]) -> bool:
        """Count a failure against each key; True if that locked one of them out."""
        now = self._clock()
        locked = False
        with self._lock:
            for key in keys:
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while times and times[0] <= now - self._window_s:
                    times.popleft()
                if len(times) >= self._max:
                    self._locked_until[key] = now + self._lockout_s
                    times.clear()
                    locked = True
            self._forget_old(now)
        return locked

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _forget_old(self, now: float) -> None:
        # Bounded memory under a flood of distinct keys: drop keys with nothing recent.
        if len(self._failures) > 10_000:
            for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self._window_s]:
                del self._failures[key]
        if len(self._locked_until) > 10_000:
            for key in [k for k, until in self._locked_until.items() if until <= now]:
                del self._locked_until[key]
