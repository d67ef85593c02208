"""Short garbage collections while thousands of control streams stay open.

CPython's full collection walks every tracked object. With ten thousand agents connected,
their sessions, tasks and call objects are hundreds of thousands of objects that live as
long as their stream, and each full collection stops the process, the event loop and every
heartbeat with it, for 100-300 ms (bench.fleet: two such pauses in a 20 s window put
heartbeat p99 at 300 ms while p50 stayed under 1 ms). Objects that long-lived belong out of
that walk: once the set of streams has settled (no stream opened or closed for
``settle_s``) after enough of them changed, collect once and freeze what is left
(``gc.freeze``), so later collections walk only what is new. Cycles among frozen objects
that become garbage wait for the next such pass, which unfreezes first.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class StreamFreezer:
    def __init__(
        self,
        streams: Callable[[], int],
        min_changes: int,
        clock: Callable[[], float] = time.monotonic,
        settle_s: float = 5.0,
        share: float = 0.1,
    ) -> None:
        """Freeze after ``max(min_changes, share * streams at the last freeze)`` streams
        opened or closed, once none has for ``settle_s``; ``min_changes`` 0 never freezes."""
        self._streams = streams
        self._min_changes = min_changes
        self._clock = clock
        self._settle_s = settle_s
        self._share = share
        self._changes = 0
        self._last_change = clock()
        self._frozen_streams = 0
        self.passes = 0

    def note_change(self, *_: object) -> None:
        """A stream opened or closed (a hub listener: any thread)."""
        self._changes += 1
        self._last_change = self._clock()

    def due(self) -> bool:
        if self._min_changes <= 0:
            return False
        enough = max(self._min_changes, self._share * self._frozen_streams)
        return self._changes >= enough and self._clock() - self._last_change >= self._settle_s

    def maybe_freeze(self) -> bool:
        """Collect and freeze if due; whether it did."""
        if not self.due():
            return False
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._changes, self._frozen_streams = 0, self._streams()
        self.passes += 1
        log.info(
            "garbage collector: %d objects frozen with %d streams open (%d unreachable collected, %.0f ms)",
            gc.get_freeze_count(), self._frozen_streams, found, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return True
