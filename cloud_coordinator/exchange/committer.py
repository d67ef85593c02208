"""Group commit: many envelopes, one transaction, one fsync.

A commit that returned is on disk (WAL, synchronous=FULL), and each costs an fsync. Uploads
hand their finished envelopes to one committer thread; while it waits on one fsync, the
next envelopes queue up and go into the following transaction together. Envelopes are
submitted in groups (one upload request's worth) and each group gets one future, which
resolves only after the transaction that holds the whole group commits, so a receipt
always means durable. A future per group rather than per envelope: at thousands of
envelopes a second, futures and their wake-ups were a measurable share of the work.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from silolink import errors

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def _shutting_down() -> errors.SiloError:
    return errors.Unavailable("the coordinator is shutting down; send again later")


class GroupCommitter(Generic[T, R]):
    """Runs ``commit(items) -> results`` (one result or SiloError per item) on one thread.

    ``submit(group)`` returns a future of the group's results, in order. A group is never
    split across transactions; ``max_batch`` bounds how many items one commit takes (a
    single group larger than that still commits whole).
    """

    def __init__(self, commit: Callable[[list[T]], list[R | errors.SiloError]], max_batch: int = 1024) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[list[T], Future] | None] = queue.Queue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exchange-commit", daemon=True)
        self._thread.start()

    def submit(self, group: list[T]) -> Future:
        future: Future = Future()
        if self._stopped:
            future.set_exception(_shutting_down())
            return future
        self._queue.put((group, future))
        return future

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        held: tuple[list[T], Future] | None = None
        stopping = False
        while not stopping:
            first = held or self._queue.get()
            held = None
            if first is None:
                break
            groups = [first]
            size = len(first[0])
            while size < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                if size + len(item[0]) > self._max_batch:
                    held = item  # starts the next commit
                    break
                groups.append(item)
                size += len(item[0])
            self._run_batch(groups)
        if held is not None:
            held[1].set_exception(_shutting_down())
        # Anything submitted after stop is refused, never left hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(_shutting_down())

    def _run_batch(self, groups: list[tuple[list[T], Future]]) -> None:
        items = [item for group, _ in groups for item in group]
        try:
            results = self._commit(items)
        except errors.SiloError as e:
            results = [e] * len(items)
        except Exception:  # noqa: BLE001 - fail this batch's senders, keep committing
            log.exception("group commit of %d envelopes failed", len(items))
            results = [errors.Unavailable("the coordinator could not store the envelope; send it again")] * len(items)
        start = 0
        for group, future in groups:
            future.set_result(results[start : start + len(group)])
            start += len(group)
