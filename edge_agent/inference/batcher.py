"""Micro-batching: concurrent small requests to one model run as one batch.

No batching thread: the first caller to find the model idle becomes the leader and runs
batches of whatever has queued (its own request included) until its own request is done,
then hands the lead to the oldest waiting caller. An idle model therefore costs a lone
request nothing (it runs at once on its own thread), and under load batches form from the
requests that queued while the previous batch ran. ``max_wait_s`` can hold a batch back a
little to let more requests join.

A failed batch is retried one request at a time, so one bad request fails alone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

Inputs = dict[str, np.ndarray]
Outputs = list[np.ndarray]


class _Request:
    __slots__ = ("inputs", "rows", "key", "done", "wake", "lead", "outputs", "error")

    def __init__(self, inputs: Inputs, rows: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key: tuple | None = None
        self.done = False
        self.wake: threading.Event | None = None  # made only for requests that wait
        self.lead = False
        self.outputs: Outputs | None = None
        self.error: BaseException | None = None

    def batch_key(self) -> tuple:
        """Requests batch together when every input agrees beyond the rows dimension."""
        if self.key is None:
            self.key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(self.inputs.items()))
        return self.key


class Batcher:
    """Runs ``run(inputs) -> outputs`` over batches; every output's first dimension is rows."""

    def __init__(self, run: Callable[[Inputs], Outputs], max_rows: int, max_wait_s: float = 0.0) -> None:
        self._run = run
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._cv = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._busy = False
        self.batches = 0  # batches run, for tests and metrics
        self.requests = 0

    def submit(self, inputs: Inputs, rows: int) -> Outputs:
        with self._cv:
            alone = not self._busy and self._max_wait_s <= 0
            self._busy |= alone
        if alone:  # an idle model and no wait for company: run at once, no batch to build
            self.batches += 1
            self.requests += 1
            try:
                return self._run(inputs)
            finally:
                self._hand_over()
        request = _Request(inputs, rows)
        with self._cv:
            self._queue.append(request)
            self._queued_rows += rows
            lead = not self._busy
            if not lead:
                request.wake = threading.Event()
            self._busy = True
            self._cv.notify()
        if request.wake is not None:
            request.wake.wait()
        if not request.done:  # woken to lead
            self._lead(request)
        if request.error is not None:
            raise request.error
        assert request.outputs is not None
        return request.outputs

    def _lead(self, own: _Request) -> None:
        try:
            while not own.done:
                self._run_batch(self._take())
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """The lead passes to the oldest waiting request, or the model goes idle."""
        with self._cv:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()  # type: ignore[union-attr] - queued requests wait
            else:
                self._busy = False

    def _take(self) -> list[_Request]:
        with self._cv:
            if self._max_wait_s > 0 and self._queued_rows < self._max_rows:
                self._cv.wait_for(lambda: self._queued_rows >= self._max_rows, self._max_wait_s)
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            if not self._queue:
                self._queued_rows -= rows
                return batch
            # Take same-shaped requests in arrival order; others wait for a later batch.
            kept: deque[_Request] = deque()
            while self._queue:
                candidate = self._queue.popleft()
                if candidate.batch_key() == first.batch_key() and rows + candidate.rows <= self._max_rows:
                    batch.append(candidate)
                    rows += candidate.rows
                else:
                    kept.append(candidate)
                    if rows >= self._max_rows:
                        break
            kept.extend(self._queue)
            self._queue = kept
            self._queued_rows -= rows
            return batch

    def _run_batch(self, batch: Sequence[_Request]) -> None:
        self.batches += 1
        self.requests += len(batch)
        if len(batch) > 1:
            try:
                merged = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
                outputs = self._run(merged)
                total = sum(r.rows for r in batch)
                if all(o.ndim >= 1 and o.shape[0] == total for o in outputs):
                    offsets = np.cumsum([r.rows for r in batch])[:-1]
                    parts = [np.split(o, offsets) for o in outputs]
                    for i, request in enumerate(batch):
                        self._finish(request, [p[i] for p in parts], None)
                    return
            except Exception:  # noqa: BLE001 - retried one by one below, where the error belongs to one caller
                pass
        for request in batch:
            try:
                self._finish(request, self._run(request.inputs), None)
            except Exception as e:  # noqa: BLE001 - handed to the caller's thread
                self._finish(request, None, e)

    @staticmethod
    def _finish(request: _Request, outputs: Outputs | None, error: BaseException | None) -> None:
        request.outputs = outputs
        request.error = error
        request.done = True
        if request.wake is not None and not request.lead:
            request.wake.set()
