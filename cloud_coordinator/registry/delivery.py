"""Background delivery of model orders with bounded concurrency.

A rollout is accepted at once: its orders are recorded, queued here, and sent down the
sites' control streams by one thread, at most ``concurrency`` sites at a time. A site holds
its slot from the order being sent until it has the model (verified, awaiting approval or
active), fails, drops out (disconnects, or its order is superseded), or ``slot_timeout_s``
passes; then the next site gets the order. So a rollout to ten thousand sites is a steady
stream of downloads the coordinator keeps up with, not ten thousand at once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (rollout_id, site)


class Delivery:
    """``send(rollout_id, site) -> bool`` sends one order (False: nothing was sent, the slot
    is free again at once); ``release(rollout_id, site)`` gives a slot back."""

    def __init__(
        self,
        send: Callable[[str, str], bool],
        concurrency: int,
        slot_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._concurrency = concurrency
        self._slot_timeout_s = slot_timeout_s
        self._clock = clock
        self._queue: collections.deque[Key] = collections.deque()
        self._queued: set[Key] = set()
        self._in_flight: dict[Key, float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self.sent = 0
        self.timed_out = 0
        self._thread = threading.Thread(target=self._run, name="rollout-delivery", daemon=True)
        self._thread.start()

    def enqueue(self, keys: Iterable[Key]) -> None:
        with self._cond:
            for key in keys:
                if key not in self._queued and key not in self._in_flight:
                    self._queue.append(key)
                    self._queued.add(key)
            self._cond.notify()

    def release(self, rollout_id: str, site: str) -> None:
        with self._cond:
            if self._in_flight.pop((rollout_id, site), None) is not None:
                self._cond.notify()

    def release_site(self, site: str) -> None:
        """The site disconnected: its slots are free (its orders are re-queued when it returns)."""
        with self._cond:
            for key in [k for k in self._in_flight if k[1] == site]:
                del self._in_flight[key]
            self._cond.notify()

    def in_flight(self) -> int:
        with self._cond:
            return len(self._in_flight)

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                while not batch and not self._stopped:
                    self._cond.wait(timeout=max(0.05, min(1.0, self._slot_timeout_s / 4)))
                    batch = self._take()
                if self._stopped:
                    return
            for key in batch:
                try:
                    sent = self._send(*key)
                except Exception:  # noqa: BLE001 - one order must not stop the others
                    log.exception("sending order %s to %s failed", *key)
                    sent = False
                if sent:
                    self.sent += 1
                else:
                    self.release(*key)

    def _take(self) -> list[Key]:
        """Expire slots held too long, then take what fits (under the condition's lock)."""
        now = self._clock()
        expired = [k for k, at in self._in_flight.items() if now - at > self._slot_timeout_s]
        for key in expired:
            del self._in_flight[key]
        if expired:
            self.timed_out += len(expired)
            log.info("%d site(s) took longer than %.0f s with their order; moving on", len(expired),
                     self._slot_timeout_s)  # fmt: skip
        batch = []
        while self._queue and len(self._in_flight) < self._concurrency:
            key = self._queue.popleft()
            self._queued.discard(key)
            self._in_flight[key] = now
            batch.append(key)
        return batch
