"""What running each job's ClientApp in a worker process costs per Flower message.

The site runs a job's ClientApp in a process of its own (``edge_agent.training.workers``):
each message crosses a pipe twice. This measures, for one message, the same ClientApp
called in the agent's own process (deserialize, call, serialize: what the host did before)
against the worker path (the same, plus the pipe both ways), for a small model and a 4 MB
one, and what starting a job's worker costs (a fork from the fork server that has Flower
imported; and the fork server's own start, once per agent process).

It also measures an app's read of its dataset: the worker has no path to the catalog, so
the rows come from the agent over the worker's pipe (``training/data_service.py``), against
the same read done directly in one process (what an app that opened the catalog did).

    python -m bench.app_host [--quick]
"""

from __future__ import annotations

import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import median, parse_args, report

ECHO_APP = """
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg, context):
    arrays = msg.content["arrays"]
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)
"""


READ_APP = """
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.catalog.reading import open_dataset

app = ClientApp()


@app.train()
def train(msg, context):
    X, y = open_dataset(context.node_config).arrays()  # the very read the baseline makes
    return Message(RecordDict({"metrics": MetricRecord({"rows": len(y)})}), reply_to=msg)
"""


def _catalog(path: Path, rows: int, columns: int) -> Path:
    """A catalog with one table of ``rows`` x ``columns`` REAL features and an INTEGER label."""
    from edge_agent.catalog.store import Catalog

    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, columns)).round(4)
    csv = path.parent / "readings.csv"
    header = ",".join(f"f{i}" for i in range(columns)) + ",label\n"
    csv.write_text(header + "".join(",".join(map(str, r)) + f",{i % 2}\n" for i, r in enumerate(values)))
    catalog = Catalog.open(path)
    catalog.import_csv(csv, "readings", label="label")
    catalog.db.conn.close()
    return path


def _message(size: int) -> bytes:
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.common.serde import message_to_proto

    arrays = ArrayRecord([np.zeros(size, dtype=np.float32)])
    message = Message(RecordDict({"arrays": arrays}), dst_node_id=5, message_type="train")
    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return message_to_proto(message).SerializeToString()


def _in_process(app_dir: Path):
    """The ClientApp called in this process, as the host did before workers."""
    from flwr.app import Context, RecordDict
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as MessageProto
    from flwr.supercore.object_ref import load_app

    app = load_app("echo_app:app", LoadClientAppError, app_dir)
    context = Context(7, 5, {}, RecordDict(), {})

    def call(data: bytes) -> bytes:
        proto = MessageProto()
        proto.ParseFromString(data)
        return message_to_proto(app(message_from_proto(proto), context)).SerializeToString()

    return call


def _time(call, data: bytes, repeats: int) -> list[float]:
    call(data)  # warm
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(data)
        out.append(time.perf_counter() - start)
    return out


def _paired(first, second, repeats: int) -> tuple[float, float]:
    """Medians of ``first`` and ``second`` run alternately (after one warm-up each), so load
    from elsewhere on the machine hits both alike."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return median(times[0]), median(times[1])


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    from flwr.supercore.task_identity import TaskIdentity

    from edge_agent.catalog.reading import DatasetReader, node_config_for
    from edge_agent.training.data_service import DataGrant
    from edge_agent.training.workers import WorkerPool, WorkerSpec

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
    repeats = 30 if args.quick else 200
    starts = 3 if args.quick else 10
    read_rows, read_columns, read_repeats = (50_000, 30, 5) if args.quick else (200_000, 30, 15)
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp) / "echo"
        app_dir.mkdir()
        (app_dir / "echo_app.py").write_text(textwrap.dedent(ECHO_APP))
        spec = WorkerSpec("echo", "echo_app:app", str(app_dir), 7, 5, {}, {})
        pool = WorkerPool(max_workers=4, idle_s=600)
        try:
            start = time.perf_counter()
            pool.run("cold", spec, _message(10), 60)
            figures["first_worker_start_s"] = time.perf_counter() - start  # includes the fork server's start
            pool.end("cold")
            start_times = []
            for i in range(starts):
                start = time.perf_counter()
                pool.run(f"start-{i}", spec, _message(10), 60)
                start_times.append(time.perf_counter() - start)
                pool.end(f"start-{i}")
            figures["worker_start_s"] = median(start_times)
            local = _in_process(app_dir)
            for label, size in (("small", 62), ("4mb", 1_000_000)):
                data = _message(size)
                inproc = median(_time(local, data, repeats))
                worker = median(_time(lambda d: pool.run("job", spec, d, 60), data, repeats))
                figures[f"{label}_in_process_ms"] = inproc * 1000
                figures[f"{label}_worker_ms"] = worker * 1000
                figures[f"{label}_added_ms"] = (worker - inproc) * 1000
                figures[f"{label}_ratio"] = worker / inproc
                rows += [
                    (f"{label} message, in the agent's process", f"{inproc * 1000:.3f} ms", "median; the old host"),
                    (f"{label} message, job's worker process", f"{worker * 1000:.3f} ms",
                     f"median; +{(worker - inproc) * 1000:.3f} ms, x{worker / inproc:.2f}"),
                ]  # fmt: skip
            catalog = _catalog(Path(tmp) / "catalog.db", read_rows, read_columns)
            (app_dir / "read_app.py").write_text(textwrap.dedent(READ_APP))
            grant = DataGrant(catalog, "readings")
            reader = WorkerSpec("read", "read_app:app", str(app_dir), 7, 5, node_config_for("readings"), {}, grant)
            data = _message(10)
            direct, piped = _paired(
                lambda: DatasetReader(catalog, "readings").arrays(),
                lambda: pool.run("read", reader, data, 120),
                read_repeats,
            )
            figures.update(read_rows=read_rows, read_columns=read_columns, read_direct_ms=direct * 1000,
                           read_through_agent_ms=piped * 1000, read_ratio=piped / direct)  # fmt: skip
            rows += [
                (f"read {read_rows:,} x {read_columns + 1}, in one process", f"{direct * 1000:.1f} ms",
                 "median; the app opening the catalog"),
                ("the same read, through the agent", f"{piped * 1000:.1f} ms",
                 f"median; x{piped / direct:.2f}, rows over the worker's pipe"),
            ]  # fmt: skip
        finally:
            pool.stop()
    rows += [
        (
            "a job's first message: worker start",
            f"{figures['worker_start_s'] * 1000:.1f} ms",
            "median, fork server warm",
        ),
        ("the agent's first job: fork server start", f"{figures['first_worker_start_s']:.2f} s", "once per agent"),
    ]
    report("ClientApp worker process: cost per message", rows, figures)


if __name__ == "__main__":
    main()
