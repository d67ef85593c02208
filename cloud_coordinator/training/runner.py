"""A training job's own process: ``python -m cloud_coordinator.training.runner DATA_DIR JOB``.

Started by the coordinator with a one-time token and the address of its JobRunnerService
in the environment. Computes the federated feature scaling, runs the rounds (resuming from
the last checkpoint after a restart), exports the global model to ONNX and hands it back.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from silolink import errors, logs, softmax
from silolink.db import open_database

from ..layout import CoordinatorLayout
from .jobs import node_id
from .store import Job, JobStore, RoundRecord

log = logging.getLogger("cloud_coordinator.training.runner")


def checkpoint_path(job_dir: Path, round_: int) -> Path:
    return job_dir / f"round-{round_:05d}.npz"


def save_checkpoint(job_dir: Path, round_: int, arrays: dict[str, np.ndarray]) -> None:
    tmp = checkpoint_path(job_dir, round_).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, checkpoint_path(job_dir, round_))


def latest_checkpoint(job_dir: Path) -> tuple[int, dict[str, np.ndarray]] | None:
    files = sorted(job_dir.glob("round-*.npz"))
    if not files:
        return None
    with np.load(files[-1]) as data:
        return int(files[-1].stem.split("-")[1]), {k: data[k] for k in data.files}


def federated_scaling(grid, job: Job, config) -> dict[str, list[float]]:
    """Feature means and standard deviations over all the job's sites, from their sums."""
    from flwr.app import RecordDict

    nodes = grid.wait_for_nodes(job.spec.min_sites, job.spec.round_timeout_s)
    messages = [grid.create_message(RecordDict({"config": config}), "query.stats", n, "0") for n in nodes]
    replies = grid.send_and_receive(messages, timeout=job.spec.round_timeout_s)
    usable, reasons = [], [f"{s}: {r}" for s, r in grid.exclusions]
    for reply in replies:
        site = grid.sites.get(reply.metadata.src_node_id, "?")
        if reply.has_error() or "stats" not in reply.content.metric_records:
            reasons.append(f"{site}: no feature statistics")
            continue
        usable.append((site, reply.content.metric_records["stats"]))
    widths = {site: len(stats["sum"]) for site, stats in usable}
    if len(set(widths.values())) > 1:
        raise errors.FailedPrecondition(
            "the sites disagree on the number of features: " + ", ".join(f"{s}: {w}" for s, w in widths.items())
        )
    if len(usable) < job.spec.min_sites:
        from .rounds import JobFailed

        raise JobFailed(
            f"feature statistics: {len(usable)} usable repl(ies), --min-sites is {job.spec.min_sites} "
            f"({'; '.join(reasons) or 'no site was reachable'})"
        )
    count = np.sum([np.asarray(s["count"]) for _, s in usable], axis=0)
    total = np.sum([np.asarray(s["sum"]) for _, s in usable], axis=0)
    squares = np.sum([np.asarray(s["sumsq"]) for _, s in usable], axis=0)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean**2, 0.0))
    classes = max(2, 1 + max(int(s["max-label"]) for _, s in usable))
    rows = float(sum(int(s["num-examples"]) for _, s in usable))
    return {
        "mean": mean.tolist(),
        "std": np.where(std > 1e-12, std, 1.0).tolist(),
        "classes": [float(classes)],
        "rows": [rows],
    }


def run(root: Path, job_id: str, address: str, token: str) -> int:
    from flwr.app import Array, ArrayRecord, ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from . import strategies
    from .grid import RunnerClient, SiloGrid
    from .rounds import JobFailed, RoundPlan, run_rounds

    layout = CoordinatorLayout(root)
    store = JobStore(open_database(layout.database))
    job = store.get(job_id)
    job_dir = root / "training" / job_id
    client = RunnerClient(address, job_id, token)
    # Flower builds messages from a process-wide task identity: one job per process.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = node_id(job_id), 0, 1
    grid = SiloGrid(client, node_id(job_id))
    grid.timeout_s = job.spec.round_timeout_s

    def finish(final: dict[str, np.ndarray]) -> int:
        model = softmax.export_onnx(
            job_dir / "model.onnx", final, np.asarray(scaling["mean"]), np.asarray(scaling["std"])
        )
        client.finish(str(model.relative_to(root)))
        return 0

    try:
        base = {"lr": job.spec.learning_rate, "local-epochs": job.spec.local_epochs, "seed": 0}
        scaling = job.scaling or federated_scaling(grid, job, ConfigRecord(base))
        store.set_scaling(job_id, scaling)
        train_config = ConfigRecord({**base, "mean": scaling["mean"], "std": scaling["std"]})
        width, classes = len(scaling["mean"]), int(scaling["classes"][0])
        resumed = latest_checkpoint(job_dir)
        if resumed:
            first_round, saved = resumed[0] + 1, resumed[1]
            log.info("resuming job %s after round %d", job_id, resumed[0])
        else:
            first_round, saved = 1, softmax.init(width, classes, job.spec.hidden_units)
        if job.spec.secure_aggregation:
            from .secagg import run_secure_rounds

            def on_secure_round(round_: int, current: dict, record: RoundRecord) -> None:
                save_checkpoint(job_dir, round_, current)
                store.record_round(job_id, record)

            # SecAgg+ quantizes each update weighted by its share of this bound: no site may exceed it.
            max_weight = max(1000.0, scaling.get("rows", [0.0])[0])
            final_arrays = run_secure_rounds(
                grid, job.spec, dict(train_config), saved, first_round, on_secure_round, max_weight
            )
            return finish(final_arrays)
        arrays = ArrayRecord({k: Array(v) for k, v in saved.items()})
        population = max(job.spec.min_sites, len(grid.wait_for_nodes(job.spec.min_sites, job.spec.round_timeout_s)))
        strategy = strategies.build(job.spec, population)
        plan = RoundPlan(job.spec, train_config, ConfigRecord(dict(train_config)))

        def on_round(round_: int, current: ArrayRecord, record: RoundRecord) -> None:
            save_checkpoint(job_dir, round_, {k: current[k].numpy() for k in current.keys()})
            store.record_round(job_id, record)
            spent = getattr(strategy, "privacy_spent", lambda: None)()
            if spent is not None:
                store.set_privacy(job_id, float(spent.epsilon), float(spent.delta))

        final = run_rounds(strategy, grid, plan, arrays, first_round, on_round)
        return finish({k: final[k].numpy() for k in final.keys()})
    except JobFailed as e:
        log.error("job %s failed: %s", job_id, e)
        store.finish(job_id, "failed", str(e))
        return 0
    except errors.SiloError as e:
        if store.get(job_id, with_rounds=False).state != "running":
            return 0  # stopped by an operator while a call was in flight
        log.error("job %s failed: %s", job_id, e.message)
        store.finish(job_id, "failed", e.message)
        return 0
    finally:
        grid.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m cloud_coordinator.training.runner DATA_DIR JOB_ID")
    logs.configure(os.environ.get("SILOLINK_COORDINATOR_LOG_LEVEL", "INFO"))
    address, token = os.environ.get("SILOLINK_JOB_RUNNER", ""), os.environ.get("SILOLINK_JOB_TOKEN", "")
    if not address or not token:
        sys.exit("this process is started by the coordinator, which sets SILOLINK_JOB_RUNNER and SILOLINK_JOB_TOKEN")
    sys.exit(run(Path(args[0]).resolve(), args[1], address, token))


if __name__ == "__main__":
    main()
