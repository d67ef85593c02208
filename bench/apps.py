"""A user's Flower app on silolink, on Flower's own deployment engine, and on an in-process Grid.

    python -m bench.apps [--quick]

The app is ``examples/numpy-app`` (softmax regression in NumPy under FedAvg, Flower's
template shape), unchanged, on scikit-learn's breast cancer data split over N sites (the same
split everywhere: each site's catalog; Flower's SuperNodes get the same catalogs through
``--node-config``, and the app reads them with silolink's data helper):

- silolink: this process's coordinator and N ``edge-agent run`` processes over mTLS; the app
  pushed (``apps push``), approved at each site (``apps install``), run with ``train start``;
- Flower's deployment engine in the same run: ``flower-superlink --insecure`` and N
  ``flower-supernode --insecure`` on loopback, ``flwr run`` (telemetry and update checks off,
  no runtime dependency installation);
- the floor: the same ServerApp and ClientApps in this process, over a Grid that only passes
  each message through Flower's serde (``bench.flower_grid``).

A round costs, on silolink and on the floor, the median of the rounds after the first, each
timed the same way by the same code (``cloud_coordinator.training.observe``: from the
strategy's configure_train to its aggregate_evaluate). The first round is reported on its
own: on silolink it includes each site starting the job's ClientApp process (once per job).
On Flower's engine every message starts processes of its own, so all its rounds cost alike:
its round is the strategy's own timing ("Strategy execution finished in X s") divided by the
rounds. Process start-up and app installation before the first round count for none of the
three. Accuracy is the app's own final line (its last round's aggregated evaluation).
Targets: silolink at least 50x faster per round than Flower's engine, within 2x + 0.1 s of the
floor, the same accuracy as Flower's engine. The full run takes 10 sites and 5 rounds;
``--quick`` 2 sites and 2 rounds, which still takes a minute or two: Flower's engine alone
spends 20 to 50 s a round here, and its SuperLink 10 to 20 s starting.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import median, parse_args, report
from tests import support

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "numpy-app"
DATASET = "patients"
STRATEGY_TIME = re.compile(r"Strategy execution finished in ([0-9.]+)s")
ACCURACY = re.compile(r"final evaluate metrics \{[^}]*'eval_accuracy': ([0-9.e-]+)")


def strategy_seconds(text: str) -> float:
    found = STRATEGY_TIME.findall(text)
    if not found:
        raise RuntimeError(f"no strategy timing in the ServerApp's output:\n{text[-3000:]}")
    return float(found[-1])


def final_accuracy(text: str) -> float:
    found = ACCURACY.findall(text)
    if not found:
        raise RuntimeError(f"no final evaluate metrics in the ServerApp's output:\n{text[-3000:]}")
    return float(found[-1])


def write_sites(work: Path, names: list[str]) -> dict[str, Path]:
    """Each site's catalog with its share of the breast-cancer patients (the same split for all runs)."""
    from edge_agent.catalog.store import Catalog
    from silolink_demo import datasets

    _, parts = datasets.breast_cancer_splits(names)
    catalogs = {}
    for name in names:
        site_dir = work / name
        site_dir.mkdir(parents=True)
        source = datasets.write_csv(work / f"{name}.csv", parts[name])
        catalog = Catalog.open(site_dir / "catalog.db")
        catalog.import_csv(source, DATASET, label="diagnosis", id_column="patient_id")
        catalog.db.conn.close()
        catalogs[name] = site_dir / "catalog.db"
    return catalogs


def round_times(durations: list[float]) -> dict:
    """The first round, and the median of the rest (the steady state)."""
    later = sorted(durations[1:]) or durations
    return {"first_round_s": durations[0], "round_s": median(later)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- silolink ------------------------------------------------------------------------------


def run_silolink(work: Path, catalogs: dict[str, Path], rounds: int) -> dict:
    from cloud_coordinator.apps.client import AppsClient
    from edge_agent.apps.install import install_bundle
    from edge_agent.apps.store import AppStore
    from edge_agent.layout import AgentLayout
    from silolink.apps.fab import FabLimits, build_fab

    coordinator = support.start_coordinator(work / "coordinator", heartbeat_interval_s=5.0)
    processes = []
    bundle = build_fab(APP)
    try:
        env = {**os.environ, "SILOLINK_AGENT_TRAINING__DATASETS": DATASET}
        for name, catalog in catalogs.items():
            site_dir = work / name
            support.enroll_site(coordinator, name, site_dir)
            layout = AgentLayout(site_dir)
            shutil.copy(catalog, layout.catalog_db)  # the site's own patients
            # The site admin approves exactly this bundle (`edge-agent apps install examples/numpy-app`).
            install_bundle(AppStore.open(layout.state_db, layout.apps_dir), bundle, "local", FabLimits())
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge_agent", "run", "--data-dir", str(site_dir), "--listen", "127.0.0.1:0"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        support.wait_for(lambda: len(coordinator.hub.connected_sites()) == len(catalogs), 120, "all agents connected")
        with support.operator(coordinator) as client:
            AppsClient(client).push(APP)
            overrides = {"num-server-rounds": rounds, "min-nodes": len(catalogs)}
            job = client.start_training(app="numpy-app", dataset=DATASET, sites=["kind=hospital"], run_config=overrides)
            support.wait_for(
                lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), 600, "the silolink job"
            )
            record = client.get_job(job["job"])
            output, offset = b"", 0
            while True:
                data, offset, complete = client.read_job_logs(job["job"], offset)
                output += data
                if complete:
                    break
        if record["state"] != "completed":
            raise RuntimeError(f"silolink job {record['state']}: {record['error']}")
        text = output.decode(errors="replace")
        return {**round_times([r["duration_s"] for r in record["rounds"]]), "accuracy": final_accuracy(text)}
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(30)
        coordinator.stop(0)


# --- Flower's deployment engine ------------------------------------------------------------


def run_flower(work: Path, catalogs: dict[str, Path], rounds: int) -> dict:
    home = work / "flwr-home"
    home.mkdir(parents=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # the SuperLink starts flower-superexec
    }
    processes: list[subprocess.Popen] = []

    def start(args: list[str], log_name: str) -> subprocess.Popen:
        log = (work / log_name).open("wb")
        # A session of its own: the engine starts processes of its own, stopped with it.
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    try:
        start([f"{bin_dir}/flower-superlink", "--insecure", "--port", str(port), "--database",
               str(work / "superlink.db"), "--disable-runtime-dependency-installation"], "superlink.log")  # fmt: skip
        wait_port(port, 120, work / "superlink.log")
        for i, catalog in enumerate(catalogs.values()):
            node_config = f"catalog='{catalog}' dataset='{DATASET}'"
            start([f"{bin_dir}/flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                   "--port", str(free_port()), "--node-config", node_config], f"supernode-{i}.log")  # fmt: skip
        overrides = f"num-server-rounds={rounds} min-nodes={len(catalogs)}"
        run = subprocess.run(
            [f"{bin_dir}/flwr", "run", str(APP), "local", "--run-config", overrides, "--stream"],
            env=env, capture_output=True, text=True, timeout=1800, cwd=work,
        )  # fmt: skip
        text = run.stdout + run.stderr
        return {"round_s": strategy_seconds(text) / rounds, "accuracy": final_accuracy(text)}
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_port(port: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Flower's SuperLink did not listen on {port}; see {log}")


# --- the floor: the same app in this process ----------------------------------------------


def run_in_process(catalogs: dict[str, Path], rounds: int, work: Path) -> dict:
    import tomllib

    from flwr.app import Context, RecordDict
    from flwr.supercore.object_ref import load_app
    from flwr.supercore.task_identity import TaskIdentity

    from bench.flower_grid import InProcessGrid
    from cloud_coordinator.training import observe
    from cloud_coordinator.training.recorder import RoundRecorder

    recorded: dict[int, float] = {}
    recorder = RoundRecorder(lambda record: recorded.__setitem__(record["round"], record["duration_s"]))
    observe.install(recorder, work)  # rounds timed by the same code as in silolink's job process

    config = tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    run_config = {**config["config"], "num-server-rounds": rounds, "min-nodes": len(catalogs)}
    client_app = load_app(config["components"]["clientapp"], RuntimeError, APP)
    server_app = load_app(config["components"]["serverapp"], RuntimeError, APP)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    nodes = {
        i + 1: (client_app, Context(1, i + 1, {"catalog": str(path), "dataset": DATASET}, RecordDict(), run_config))
        for i, path in enumerate(catalogs.values())
    }
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    flower_log = logging.getLogger("flwr")
    flower_log.addHandler(handler)
    try:
        with contextlib.redirect_stdout(captured):
            server_app(InProcessGrid(nodes), Context(1, 0, {}, RecordDict(), run_config))
    finally:
        flower_log.removeHandler(handler)
    recorder.flush()
    text = captured.getvalue()
    return {**round_times([recorded[r] for r in sorted(recorded)]), "accuracy": final_accuracy(text)}


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    if not APP.is_dir():
        raise SystemExit(f"{APP} is missing: the benchmark runs the numpy example app")
    sites = 2 if args.quick else 10
    rounds = 2 if args.quick else 5
    names = [f"hospital-{i:02d}" for i in range(sites)]
    with tempfile.TemporaryDirectory(prefix="silolink-bench-apps-") as tmp:
        work = Path(tmp)
        catalogs = write_sites(work / "catalogs", names)
        floor = run_in_process(catalogs, rounds, work / "floor")
        silo = run_silolink(work / "silolink", catalogs, rounds)
        flower = run_flower(work / "flower", catalogs, rounds)
    figures = {
        "sites": sites,
        "rounds": rounds,
        "round_s_silolink": round(silo["round_s"], 4),
        "first_round_s_silolink": round(silo["first_round_s"], 4),
        "round_s_flower_engine": round(flower["round_s"], 4),
        "round_s_in_process": round(floor["round_s"], 4),
        "first_round_s_in_process": round(floor["first_round_s"], 4),
        "speedup_vs_flower_engine": round(flower["round_s"] / silo["round_s"], 1),
        "floor_budget_s": round(2 * floor["round_s"] + 0.1, 4),
        "within_floor_budget": silo["round_s"] <= 2 * floor["round_s"] + 0.1,
        "accuracy_silolink": round(silo["accuracy"], 4),
        "accuracy_flower_engine": round(flower["accuracy"], 4),
        "accuracy_in_process": round(floor["accuracy"], 4),
        "accuracy_gap_points": round(100 * abs(silo["accuracy"] - flower["accuracy"]), 2),
    }
    f = figures
    rows = [
        (f"round, silolink ({sites} agents over mTLS)", f"{f['round_s_silolink']:.3f} s",
         f"median of rounds 2..{rounds}; round 1 {f['first_round_s_silolink']:.3f} s (sites start the ClientApp)"),
        ("round, Flower deployment engine", f"{f['round_s_flower_engine']:.3f} s",
         f"SuperLink + {sites} SuperNodes, insecure, loopback, same run; strategy time / rounds"),
        ("round, in-process Grid (floor)", f"{f['round_s_in_process']:.3f} s",
         f"same app, one process; round 1 {f['first_round_s_in_process']:.3f} s"),
        ("silolink vs Flower's engine", f"{f['speedup_vs_flower_engine']:.1f}x", "target >= 50x"),
        ("silolink vs floor budget (2x + 0.1 s)", f"{f['floor_budget_s']:.3f} s",
         "met" if f["within_floor_budget"] else "NOT met"),
        ("accuracy: silolink / Flower engine / floor",
         f"{f['accuracy_silolink']:.4f} / {f['accuracy_flower_engine']:.4f} / {f['accuracy_in_process']:.4f}",
         f"gap {f['accuracy_gap_points']:.2f} points (same split; target: within noise)"),
    ]  # fmt: skip
    report("A Flower app (examples/numpy-app) on silolink, on Flower's engine, in-process", rows, figures)


if __name__ == "__main__":
    main()
