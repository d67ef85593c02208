"""Group commit: many envelopes, one transaction, one fsync.

A commit that returned is on disk (WAL, synchronous=FULL), and each costs an fsync. Uploads
hand their finished envelopes to one committer thread; while it waits on one fsync, the
next envelopes queue up and go into the following transaction together. Each submitter
gets a future that resolves only after the transaction that holds its envelope commits,
so a receipt always means durable.
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


class GroupCommitter(Generic[T, R]):
    """Runs ``commit(batch) -> results`` (one result or SiloError per item) on one thread."""

    def __init__(self, commit: Callable[[list[T]], list[R | errors.SiloError]], max_batch: int = 1024) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[T, Future] | None] = queue.Queue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exchange-commit", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future:
        future: Future = Future()
        if self._stopped:
            future.set_exception(errors.Unavailable("the coordinator is shutting down; send again later"))
            return future
        self._queue.put((item, future))
        return future

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stopping:
                break
        # Anything submitted after stop is refused, never left hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(errors.Unavailable("the coordinator is shutting down; send again later"))

    def _run_batch(self, batch: list[tuple[T, Future]]) -> None:
        try:
            results = self._commit([item for item, _ in batch])
        except errors.SiloError as e:
            results = [e] * len(batch)
        except Exception:  # noqa: BLE001 - fail this batch's senders, keep committing
            log.exception("group commit of %d envelopes failed", len(batch))
            results = [errors.Unavailable("the coordinator could not store the envelope; send it again")] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, errors.SiloError):
                future.set_exception(result)
            else:
                future.set_result(result)
