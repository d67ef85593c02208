"""Federated training: model quality on real data, and the cost of a round over silolink.

    python -m bench.training [--quick]

Quality (scikit-learn's breast cancer over 3 hospitals, non-IID; digits over 10 sites,
Dirichlet alpha 0.3; several seeds): the built-in ``tabular`` app under Flower's FedAvg,
beside centralized training (all rows in one place) and local-only training (each site
alone), all scored on the same held-out test rows. The federated runs use the real app
reading real SQLite catalogs and the real round loop and strategy; only the transport is
in-process, since quality does not depend on it. Targets: FedAvg within 1 point of
centralized on breast cancer, within 2 points on digits. Digits also with one hidden layer
of 32 units (``--hidden 32``), the same three ways.

Round overhead: 10 agents (``edge-agent run`` processes) and a coordinator with real mTLS
on loopback run a job with trivial local work; seconds per round from the job's own record,
beside the same rounds over an in-process grid (no network) in this run. Target: at most
0.25 s. Flower's own deployment engine needs about 9 to 15 s per round on this kind of
machine (FACTS.md; not re-measured here).
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import median, parse_args, report
from silolink import softmax
from tests import support


def dirichlet_split(y: np.ndarray, sites: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per site, each class spread over sites by Dirichlet(alpha) shares."""
    parts: list[list[int]] = [[] for _ in range(sites)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet([alpha] * sites)
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for site, chunk in enumerate(np.split(idx, cuts)):
            parts[site] += chunk.tolist()
    # Every site needs a few rows to take part; top up the smallest from the largest.
    for site in range(sites):
        while len(parts[site]) < 10:
            donor = max(range(sites), key=lambda s: len(parts[s]))
            parts[site].append(parts[donor].pop())
    return [np.array(sorted(p)) for p in parts]


def write_catalog(path: Path, X: np.ndarray, y: np.ndarray, name: str = "data"):
    from edge_agent.catalog.store import Catalog

    csv_path = path.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"f{i}" for i in range(X.shape[1])), "label"])
        for row, label in zip(X, y, strict=True):
            writer.writerow([*(f"{v:.6g}" for v in row), int(label)])
    catalog = Catalog.open(path)
    catalog.import_csv(csv_path, name, label="label")
    return catalog


def federated(catalogs: list[Path], rounds: int, epochs: int, lr: float, seed: int, hidden: tuple[int, ...] = ()):
    """FedAvg over in-process sites with the built-in tabular app's own ServerApp pieces (its
    federated scaling, its checked FedAvg); returns (params, mean, std, seconds per round)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from bench.flower_grid import InProcessGrid
    from edge_agent.training.tabular import app
    from silolink_apps.tabular_app import server_app as tabular

    logging.getLogger("flwr").setLevel(logging.WARNING)  # after Flower's import, which sets it: a line per round
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    grid = InProcessGrid(
        {i + 1: (app, Context(1, i + 1, {"catalog": str(p), "dataset": "data"}, RecordDict(), {}))
         for i, p in enumerate(catalogs)}
    )  # fmt: skip
    settings = tabular.Settings.from_run_config(
        {"num-server-rounds": rounds, "min-sites": len(catalogs), "local-epochs": epochs, "lr": lr, "seed": seed}
    )
    base = {"lr": lr, "local-epochs": epochs, "seed": seed}
    scaling = tabular.federated_scaling(grid, settings, base)
    initial = softmax.init(len(scaling["mean"]), scaling["classes"], hidden, seed)
    strategy = tabular.checked(tabular.build_strategy(settings, len(catalogs)), settings, grid)
    config = ConfigRecord(tabular.train_config(settings, scaling))
    started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
                            num_rounds=rounds, timeout=60, train_config=config, evaluate_config=config)  # fmt: skip
    per_round = (time.perf_counter() - started) / rounds
    params = {k: result.arrays[k].numpy() for k in result.arrays.keys()}
    return params, np.array(scaling["mean"]), np.array(scaling["std"]), per_round


def accuracy(params, mean, std, X, y) -> float:
    return softmax.loss_accuracy(params, softmax.standardize(X, mean, std), y)[1]


def train_alone(X, y, classes, epochs, lr, seed, hidden=()):
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    params = softmax.train(
        softmax.init(X.shape[1], classes, hidden, seed),
        softmax.standardize(X, mean, std),
        y,
        epochs,
        lr,
        np.random.default_rng(seed),
    )
    return params, mean, std


def quality(
    name: str, X, y, sites: int, alpha: float, seeds: list[int], rounds: int, epochs: int, work: Path, hidden=()
) -> dict:
    """Test accuracy of centralized, local-only and FedAvg training; every method gets the
    same passes over its data (rounds x local epochs)."""
    results: dict[str, list[float]] = {"centralized": [], "local_only": [], "fedavg": []}
    classes = int(y.max()) + 1
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        cut = int(0.2 * len(y))
        test, train = order[:cut], order[cut:]
        parts = [train[p] for p in dirichlet_split(y[train], sites, alpha, rng)]
        params, mean, std = train_alone(X[train], y[train], classes, rounds * epochs, 0.1, seed, hidden)
        results["centralized"].append(accuracy(params, mean, std, X[test], y[test]))
        local = []
        for part in parts:
            params, mean, std = train_alone(X[part], y[part], classes, rounds * epochs, 0.1, seed, hidden)
            local.append(accuracy(params, mean, std, X[test], y[test]))
        results["local_only"].append(float(np.mean(local)))
        catalogs = []
        for i, part in enumerate(parts):
            path = work / f"{name}-{seed}-site{i}.db"
            write_catalog(path, X[part], y[part]).db.conn.close()
            catalogs.append(path)
        params, mean, std, _ = federated(catalogs, rounds, epochs, 0.1, seed, hidden)
        results["fedavg"].append(accuracy(params, mean, std, X[test], y[test]))
    out = {f"{name}_{k}_accuracy": float(np.mean(v)) for k, v in results.items()}
    out[f"{name}_fedavg_gap_points"] = 100 * (out[f"{name}_centralized_accuracy"] - out[f"{name}_fedavg_accuracy"])
    return out


def round_overhead(work: Path, agents: int, rounds: int) -> dict:
    """Seconds per round for a job over real agents, and the same over an in-process grid."""
    rng = np.random.default_rng(0)
    coordinator = support.start_coordinator(work / "coordinator", heartbeat_interval_s=5.0)
    processes = []
    catalogs = []
    try:
        env = {**os.environ, "SILOLINK_AGENT_TRAINING__DATASETS": "data"}
        for i in range(agents):
            site_dir = work / f"site-{i:02d}"
            support.enroll_site(coordinator, f"site-{i:02d}", site_dir)
            X, y = rng.standard_normal((20, 4)), rng.integers(0, 2, 20)
            write_catalog(site_dir / "catalog.db", X, y).db.conn.close()
            catalogs.append(site_dir / "catalog.db")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge_agent", "run", "--data-dir", str(site_dir), "--listen", "127.0.0.1:0"],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        support.wait_for(lambda: len(coordinator.hub.connected_sites()) == agents, 60, "all agents connected")
        with support.operator(coordinator) as client:
            # A first job warms up each agent (it imports Flower on its first message).
            warm = client.start_training(app="tabular", dataset="data", sites=["kind=hospital"], rounds=1,
                                         min_sites=agents, round_timeout_s=60)  # fmt: skip
            support.wait_for(
                lambda: client.get_job(warm["job"])["state"] not in ("queued", "running"), 120, "warm-up job"
            )
            job = client.start_training(app="tabular", dataset="data", sites=["kind=hospital"], rounds=rounds,
                                        min_sites=agents, round_timeout_s=60)  # fmt: skip
            support.wait_for(
                lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), 300, "benchmark job"
            )
            record = client.get_job(job["job"])
            secure = client.start_training(app="tabular-secagg", dataset="data", sites=["kind=hospital"],
                                           rounds=3, min_sites=agents, round_timeout_s=60,
                                           secure_aggregation=True)  # fmt: skip
            support.wait_for(
                lambda: client.get_job(secure["job"])["state"] not in ("queued", "running"), 300, "SecAgg+ job"
            )
            secure_record = client.get_job(secure["job"])
        for done in (record, secure_record):
            if done["state"] != "completed":
                raise RuntimeError(f"benchmark job {done['state']}: {done['error']}")
        silolink_s = median([r["duration_s"] for r in record["rounds"]])
        secagg_s = median([r["duration_s"] for r in secure_record["rounds"]])
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(30)
        coordinator.stop(0)
    *_, in_process_s = federated(catalogs, rounds, 1, 0.1, 0)
    return {
        "round_agents": agents,
        "round_s_silolink": silolink_s,
        "round_s_silolink_secagg": secagg_s,
        "round_s_in_process": in_process_s,
        "round_transport_overhead_s": silolink_s - in_process_s,
    }


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower logs every round at INFO
    from sklearn.datasets import load_breast_cancer, load_digits

    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    figures: dict = {"seeds": len(seeds)}
    with tempfile.TemporaryDirectory(prefix="silolink-bench-") as tmp:
        work = Path(tmp)
        cancer = load_breast_cancer()
        figures.update(quality("cancer", cancer.data, cancer.target, 3, 0.5, seeds, 20, 1, work))
        digits = load_digits()
        digit_rounds = 20 if args.quick else 30
        figures.update(quality("digits", digits.data, digits.target, 10, 0.3, seeds, digit_rounds, 3, work))
        figures.update(
            quality("digits_mlp", digits.data, digits.target, 10, 0.3, seeds, digit_rounds, 3, work, hidden=(32,))
        )
        figures.update(round_overhead(work / "rounds", 10, 5 if args.quick else 20))
    f = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    rows = [
        ("breast cancer, 3 hospitals: centralized", f"{f['cancer_centralized_accuracy']:.3f}", f"{len(seeds)} seeds"),
        ("  local only (mean over sites)", f"{f['cancer_local_only_accuracy']:.3f}", "Dirichlet alpha 0.5"),
        ("  FedAvg", f"{f['cancer_fedavg_accuracy']:.3f}",
         f"{f['cancer_fedavg_gap_points']:+.2f} points below centralized (target <= 1)"),
        ("digits, 10 sites: centralized", f"{f['digits_centralized_accuracy']:.3f}", ""),
        ("  local only (mean over sites)", f"{f['digits_local_only_accuracy']:.3f}", "Dirichlet alpha 0.3"),
        ("  FedAvg", f"{f['digits_fedavg_accuracy']:.3f}",
         f"{f['digits_fedavg_gap_points']:+.2f} points below centralized (target <= 2)"),
        ("digits, MLP (--hidden 32): centralized", f"{f['digits_mlp_centralized_accuracy']:.3f}", ""),
        ("  local only (mean over sites)", f"{f['digits_mlp_local_only_accuracy']:.3f}", ""),
        ("  FedAvg", f"{f['digits_mlp_fedavg_accuracy']:.3f}",
         f"{f['digits_mlp_fedavg_gap_points']:+.2f} points below centralized"),
        ("round, 10 agents over mTLS (s)", f"{f['round_s_silolink']:.3f}", "median; target <= 0.25"),
        ("round, in-process grid (s)", f"{f['round_s_in_process']:.3f}", "same app and strategy, no network"),
        ("round with SecAgg+, 10 agents (s)", f"{f['round_s_silolink_secagg']:.3f}", "Flower's SecAgg+ workflow"),
        ("Flower deployment engine (s)", "9-15", "FACTS.md, not measured in this run"),
    ]  # fmt: skip
    report("silolink federated training (ratios and gaps against baselines from this run)", rows, f)


if __name__ == "__main__":
    main()
