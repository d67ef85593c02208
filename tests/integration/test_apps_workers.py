"""The pool of ClientApp worker processes on its own (real processes, the probe app): how
many run at once, which one makes room, and idle workers ending by themselves."""

from __future__ import annotations

import threading
import uuid

import psutil
import pytest

from edge_agent.training.workers import WorkerPool, WorkerSpec
from silolink import errors
from tests import support
from tests.flower_app_builders import write_app


def message(action: str = "") -> bytes:
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.common.serde import message_to_proto

    sent = Message(RecordDict({"config": ConfigRecord({"action": action})}), dst_node_id=5, message_type="train")
    sent.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return message_to_proto(sent).SerializeToString()


@pytest.fixture
def spec(tmp_path, flower_server_identity):
    directory = write_app(tmp_path)
    return WorkerSpec("probe-app:1.0.0", "probe_app.client_app:app", str(directory), 7, 5, {}, {})


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_the_least_recently_used_idle_worker_makes_room_and_busy_ones_are_never_taken(spec):
    pool = WorkerPool(max_workers=2, idle_s=600)
    try:
        pool.run("a", spec, message(), 30)
        pool.run("b", spec, message(), 30)
        first = pool._workers["a"].process.pid
        pool.run("c", spec, message(), 30)  # "a" is the least recently used: it goes
        assert sorted(pool.jobs()) == ["b", "c"]
        support.wait_for(lambda: gone(first), 10, "the evicted worker to end")
        outcomes: dict[str, errors.SiloError] = {}
        hanging = [threading.Thread(target=_hang, args=(pool, j, spec, outcomes)) for j in ("b", "c")]
        for thread in hanging:
            thread.start()
        support.wait_for(lambda: all(w.lock.locked() for w in pool._workers.values()), 10, "both workers busy")
        with pytest.raises(errors.ResourceExhausted, match=r"runs 2 ClientApps already \(\[training\] max_workers\)"):
            pool.run("d", spec, message(), 30)
    finally:
        pool.stop()
    for thread in hanging:
        thread.join(10)
    assert pool.jobs() == []
    # The messages in flight when the agent stopped end as cancelled, naming the app.
    assert {type(e) for e in outcomes.values()} == {errors.Cancelled}, outcomes
    assert "app probe-app:1.0.0's process was stopped while handling a message" in outcomes["b"].message


def _hang(pool: WorkerPool, job: str, spec: WorkerSpec, outcomes: dict) -> None:
    try:
        pool.run(job, spec, message("hang"), 30)
    except errors.SiloError as e:
        outcomes[job] = e


def test_idle_workers_end_by_themselves(spec):
    pool = WorkerPool(max_workers=4, idle_s=0.4)
    try:
        pool.run("a", spec, message(), 30)
        pid = pool._workers["a"].process.pid
        support.wait_for(lambda: pool.jobs() == [] and gone(pid), 10, "the idle worker to end")
    finally:
        pool.stop()
