"""Micro-batching: concurrent requests share runs; each gets its own rows back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_agent.inference.batcher import Batcher


def slow_double(inputs):
    time.sleep(0.002)  # a model run long enough for others to queue behind it
    x = inputs["x"]
    if (x < 0).any():
        raise ValueError("negative input")
    return [x * 2, x.sum(axis=1)]


def test_lone_request_runs_at_once():
    batcher = Batcher(slow_double, max_rows=64)
    out = batcher.submit({"x": np.ones((1, 3))}, 1)
    assert out[0].tolist() == [[2, 2, 2]] and batcher.batches == 1


def test_concurrent_requests_batch_and_get_their_own_rows():
    batcher = Batcher(slow_double, max_rows=16)

    def call(i):
        x = np.full((1, 3), float(i))
        return i, batcher.submit({"x": x}, 1)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(400)))
    for i, (doubled, total) in results:
        assert doubled.tolist() == [[2 * i] * 3] and total.tolist() == [3 * i]
    assert batcher.requests == 400
    assert batcher.batches < 200  # requests really shared runs
    assert max(len(r[1][0]) for r in results) == 1


def test_a_bad_request_fails_alone():
    batcher = Batcher(slow_double, max_rows=64)
    barrier = threading.Barrier(8)

    def call(i):
        barrier.wait()
        x = np.full((1, 2), -1.0 if i == 3 else float(i))
        try:
            return batcher.submit({"x": x}, 1)[0].tolist()
        except ValueError as e:
            return str(e)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert results[3] == "negative input"
    assert [r for i, r in enumerate(results) if i != 3] == [[[2.0 * i] * 2] for i in range(8) if i != 3]


def test_different_shapes_run_in_separate_batches():
    batcher = Batcher(lambda inputs: [inputs["x"].sum(axis=1)], max_rows=64)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: batcher.submit({"x": np.ones((2, 1 + i % 2))}, 2), range(40)))
    assert [r[0].tolist() for r in results] == [[1.0 + i % 2] * 2 for i in range(40)]


@pytest.mark.parametrize("wait_s", [0.0, 0.005])
def test_batches_never_exceed_max_rows(wait_s):
    seen = []

    def run(inputs):
        seen.append(len(inputs["x"]))
        time.sleep(0.001)
        return [inputs["x"]]

    batcher = Batcher(run, max_rows=8, max_wait_s=wait_s)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: batcher.submit({"x": np.ones((3, 1))}, 3), range(64)))
    assert max(seen) <= 8 and sum(seen) == 64 * 3
