"""A user's Flower app on silolink, on Flower's own deployment engine, and on an in-process Grid.

    python -m bench.apps [--quick]

The app is ``examples/numpy-app`` (softmax regression in NumPy under FedAvg, Flower's
template shape), unchanged, on scikit-learn's breast cancer data split over N sites (the same
split everywhere: each site's catalog; Flower's SuperNodes get the same catalogs through
``--node-config``, and the app reads them with silolink's data helper):

- silolink: this process's coordinator and N ``edge-agent run`` processes over mTLS, each
  ready (connected, its ClientApp fork server started); the app pushed (``apps push``),
  approved at each site (``apps install``), run with ``train start``;
- Flower's deployment engine in the same run: ``flower-superlink --insecure`` and N
  ``flower-supernode --insecure`` on loopback, ``flwr run --stream`` (telemetry and update
  checks off, no runtime dependency installation, ``FLWR_LOG_LEVEL=DEBUG`` for timestamps);
- the floor: the same ServerApp and ClientApps in this process, over a Grid that only passes
  each message through Flower's serde (``bench.flower_grid``).

Every engine gets the same two measures, from the same run:

- **job / round**: the job's wall time, start-up included, divided by its rounds. silolink:
  from the operator's ``StartTraining`` call to the job's end (polled every 0.05 s).
  Flower's engine: ``flwr run --stream`` from the moment it says the SuperLink accepted the run
  to its exit (the command's own start and the bundle's upload before that are left out, so
  Flower's figure is the smaller).
  The floor: loading the apps and running the ServerApp.
- **steady round**: the median of rounds 2..N, each from the strategy's configure_train to its
  aggregate_evaluate. silolink and the floor are timed by the same code
  (``cloud_coordinator.training.observe``); Flower's engine from its ServerApp's log
  timestamps (``[ROUND n/N]`` to the next, the last to "Strategy execution finished").

Round 1 and the one-off start (job time less the rounds: the job process or ServerApp start,
the app's import, the job's end) are printed apart. Accuracy is the app's own final line (its
last round's aggregated evaluation). Targets (issue 13): silolink at least 50x faster per
round than Flower's engine, within 2x + 0.1 s of the floor, the same accuracy as Flower's
engine. The full run takes 10 sites and 5 rounds; ``--quick`` 2 sites and 2 rounds, which
still takes a minute or two: Flower's engine alone spends 10 to 50 s a round here, and 5 to
20 s starting a run.
"""

from __future__ import annotations

import contextlib
import datetime
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
ACCURACY = re.compile(r"final evaluate metrics \{[^}]*'eval_accuracy': ([0-9.e-]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Flower's log lines with timestamps (FLWR_LOG_LEVEL=DEBUG): "INFO 2026-01-01 10:00:00,123:  [ROUND 2/5]"
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):\s+"
ROUND_STARTED = re.compile(STAMP + r"\[ROUND (\d+)/\d+\]")
STRATEGY_FINISHED = re.compile(STAMP + r"Strategy execution finished in")
AGENT_READY = "ClientApp fork server ready"
RUN_ACCEPTED = "Successfully started run"  # `flwr run`, once the SuperLink has the run


def flower_round_times(text: str) -> list[float]:
    """Each round's seconds, from the ServerApp's timestamped log: [ROUND n] to the next."""
    text = ANSI.sub("", text)
    starts = {int(n): _stamp(t) for t, n in ROUND_STARTED.findall(text)}
    finished = STRATEGY_FINISHED.findall(text)
    if not starts or not finished:
        raise RuntimeError(f"no timestamped rounds in the ServerApp's output:\n{text[-3000:]}")
    marks = [starts[n] for n in sorted(starts)] + [_stamp(finished[-1])]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def summary(total_s: float, rounds: list[float], accuracy: float) -> dict:
    """The same measures for every engine: job time per round (start-up included), round 1,
    the steady round (median of rounds 2..N) and the one-off start (job time less its rounds)."""
    return {
        "total_s": total_s,
        "job_round_s": total_s / len(rounds),
        "first_round_s": rounds[0],
        "round_s": median(rounds[1:] or rounds),
        "start_s": max(0.0, total_s - sum(rounds)),
        "accuracy": accuracy,
    }


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
    processes, logs = [], []
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
            logs.append(work / f"{name}.log")
            with logs[-1].open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "edge_agent",
                            "run",
                            "--data-dir",
                            str(site_dir),
                            "--listen",
                            "127.0.0.1:0",
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )  # fmt: skip
                )
        support.wait_for(lambda: len(coordinator.hub.connected_sites()) == len(catalogs), 120, "all agents connected")
        # Running agents have their fork servers up: the job should not pay an agent's own start.
        support.wait_for(lambda: all(AGENT_READY in log.read_text() for log in logs), 120, "the agents' fork servers")
        with support.operator(coordinator) as client:
            AppsClient(client).push(APP)
            overrides = {"num-server-rounds": rounds, "min-nodes": len(catalogs)}
            started = time.monotonic()
            job = client.start_training(app="numpy-app", dataset=DATASET, sites=["kind=hospital"], run_config=overrides)
            support.wait_for(
                lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), 600, "the silolink job", 0.05
            )
            total = time.monotonic() - started
            record = client.get_job(job["job"])
            output, offset = b"", 0
            while True:
                data, offset, complete = client.read_job_logs(job["job"], offset)
                output += data
                if complete:
                    break
        if record["state"] != "completed":
            raise RuntimeError(f"silolink job {record['state']}: {record['error']}")
        durations = [r["duration_s"] for r in sorted(record["rounds"], key=lambda r: r["round"])]
        return summary(total, durations, final_accuracy(output.decode(errors="replace")))
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
        "FLWR_LOG_LEVEL": "DEBUG",  # timestamps on the ServerApp's lines: each round's time
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
        launched = time.monotonic()
        run = subprocess.Popen(
            [f"{bin_dir}/flwr", "run", str(APP), "local", "--run-config", overrides, "--stream"],
            env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work,
        )  # fmt: skip
        lines, accepted = [], None
        for line in run.stdout:  # the job's time starts when the SuperLink has accepted the run
            lines.append(line)
            if accepted is None and RUN_ACCEPTED in line:
                accepted = time.monotonic()
        run.wait(60)
        ended = time.monotonic()
        text = "".join(lines)
        if run.returncode or accepted is None:
            raise RuntimeError(f"flwr run failed ({run.returncode}):\n{text[-3000:]}")
        return {
            **summary(ended - accepted, flower_round_times(text), final_accuracy(text)),
            "submit_s": accepted - launched,
        }
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

    started = time.monotonic()
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
    total = time.monotonic() - started
    recorder.flush()
    return summary(total, [recorded[r] for r in sorted(recorded)], final_accuracy(captured.getvalue()))


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
    figures = figures_of(sites, rounds, silo, flower, floor)
    report("A Flower app (examples/numpy-app) on silolink, on Flower's engine, in-process",
           rows_of(figures), figures)  # fmt: skip


ENGINES = ("silolink", "flower_engine", "in_process")


def figures_of(sites: int, rounds: int, silo: dict, flower: dict, floor: dict) -> dict:
    figures: dict = {"sites": sites, "rounds": rounds}
    for key, run in zip(ENGINES, (silo, flower, floor), strict=True):
        for measure in ("job_round_s", "round_s", "first_round_s", "start_s", "accuracy"):
            figures[f"{measure}_{key}"] = round(run[measure], 4)
    figures["flower_submit_s"] = round(flower["submit_s"], 4)
    figures["speedup_steady_round"] = round(flower["round_s"] / silo["round_s"], 1)
    figures["speedup_job_round"] = round(flower["job_round_s"] / silo["job_round_s"], 1)
    figures["overhead_steady_round_s"] = round(silo["round_s"] - floor["round_s"], 4)
    figures["overhead_job_round_s"] = round(silo["job_round_s"] - floor["job_round_s"], 4)
    figures["floor_budget_s"] = round(2 * floor["round_s"] + 0.1, 4)
    figures["within_floor_budget"] = silo["round_s"] <= figures["floor_budget_s"]
    figures["first_round_vs_steady_silolink"] = round(silo["first_round_s"] / silo["round_s"], 2)
    figures["accuracy_gap_points"] = round(100 * abs(silo["accuracy"] - flower["accuracy"]), 2)
    return figures


def rows_of(f: dict) -> list[tuple[str, str, str]]:
    sites, rounds = f["sites"], f["rounds"]

    def three(measure: str) -> str:
        return " / ".join(f"{f[f'{measure}_{key}']:.3f}" for key in ENGINES) + " s"

    return [
        ("engines: silolink / Flower engine / floor", "", f"silolink: {sites} agents over mTLS; Flower: SuperLink + "
         f"{sites} SuperNodes, insecure, loopback; floor: one process; {rounds} rounds, same run"),
        ("job / round, start-up included", three("job_round_s"),
         f"job wall time / rounds (Flower's from its run's acceptance; `flwr run` took {f['flower_submit_s']:.2f} s "
         "more to start and submit it)"),
        ("steady round", three("round_s"), f"median of rounds 2..{rounds}"),
        ("round 1", three("first_round_s"), "silolink's sites start the job's ClientApp while its ServerApp starts"),
        ("one-off start", three("start_s"), "job time less its rounds: process start, app import, job end"),
        ("silolink vs Flower's engine, steady round", f"{f['speedup_steady_round']:.1f}x", "target >= 50x"),
        ("silolink vs Flower's engine, job / round", f"{f['speedup_job_round']:.1f}x",
         f"target >= 50x; start-up shared over {rounds} rounds"),
        ("silolink over the floor, steady round", f"+{f['overhead_steady_round_s']:.3f} s",
         f"budget 2x + 0.1 s = {f['floor_budget_s']:.3f} s: " + ("met" if f["within_floor_budget"] else "NOT met")),
        ("silolink over the floor, job / round", f"+{f['overhead_job_round_s']:.3f} s", "mostly the job process start"),
        ("silolink round 1 / steady round", f"{f['first_round_vs_steady_silolink']:.2f}x", "target ~2x"),
        ("accuracy: silolink / Flower engine / floor",
         f"{f['accuracy_silolink']:.4f} / {f['accuracy_flower_engine']:.4f} / {f['accuracy_in_process']:.4f}",
         f"gap {f['accuracy_gap_points']:.2f} points (same split; target: within noise)"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
