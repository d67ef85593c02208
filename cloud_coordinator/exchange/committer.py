"""Group commit: many envelopes, one transaction, one fsync.

A commit that returned is on disk (WAL, synchronous=FULL), and each costs an fsync. Uploads
hand their finished envelopes to one committer thread; while it waits on one fsync, the
next envelopes queue up and go into the following transaction together. Envelopes are
submitted in groups (one upload request's worth) and each group gets one future, which
resolves only after the transaction that holds the whole group commits, so a receipt
always means durable. A future per group rather than per envelope: at thousands of
envelopes a second, futures and their wake-ups were a measurable share of the work.

With a ``prepare`` step the work is a two-stage pipeline: one thread prepares a batch (the
broker writes and fdatasyncs its segment bytes) while another commits the batch before it,
so the two waits on the disk overlap instead of adding up.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

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

    def __init__(
        self,
        commit: Callable[[list[T], Any], list[R | errors.SiloError]],
        max_batch: int = 1024,
        prepare: Callable[[list[T]], Any] | None = None,
        name: str = "exchange",
        what: str = "envelope",
    ) -> None:
        """``commit(items, prepared)`` gets what ``prepare(items)`` returned (None without
        ``prepare``); a batch whose ``prepare`` raised is failed without reaching ``commit``.
        ``name`` names the threads, ``what`` the items in error messages."""
        self._commit = commit
        self._what = what
        self._prepare = prepare
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[list[T], Future] | None] = queue.Queue()
        # One prepared batch waits at most: batches grow while both stages are busy.
        self._prepared: queue.Queue[tuple[list[tuple[list[T], Future]], Any] | None] = queue.Queue(maxsize=1)
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-commit", daemon=True)]
        if prepare is not None:
            self._threads[0].name = f"{name}-prepare"
            self._threads.append(threading.Thread(target=self._run_commits, name=f"{name}-commit", daemon=True))
        for thread in self._threads:
            thread.start()

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
        for thread in self._threads:
            thread.join(10)

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
            self._dispatch(groups)
        if self._prepare is not None:
            self._prepared.put(None)
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

    def _dispatch(self, groups: list[tuple[list[T], Future]]) -> None:
        if self._prepare is None:
            self._run_batch(groups, None)
            return
        items = [item for group, _ in groups for item in group]
        try:
            prepared = self._prepare(items)
        except Exception as e:  # noqa: BLE001 - fail this batch's senders, keep going
            self._resolve(groups, self._failed(items, e))
            return
        self._prepared.put((groups, prepared))

    def _run_commits(self) -> None:
        while (item := self._prepared.get()) is not None:
            self._run_batch(*item)

    def _run_batch(self, groups: list[tuple[list[T], Future]], prepared: Any) -> None:
        items = [item for group, _ in groups for item in group]
        try:
            results = self._commit(items, prepared)
        except Exception as e:  # noqa: BLE001 - fail this batch's senders, keep committing
            results = self._failed(items, e)
        self._resolve(groups, results)

    def _failed(self, items: list[T], e: Exception) -> list[errors.SiloError]:
        if isinstance(e, errors.SiloError):
            return [e] * len(items)
        log.error("group commit of %d %ss failed", len(items), self._what, exc_info=e)
        return [errors.Unavailable(f"the coordinator could not store the {self._what}; send it again")] * len(items)

    @staticmethod
    def _resolve(groups: list[tuple[list[T], Future]], results: list) -> None:
        start = 0
        for group, future in groups:
            future.set_result(results[start : start + len(group)])
            start += len(group)
