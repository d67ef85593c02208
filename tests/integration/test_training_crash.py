"""kill -9 of the coordinator mid-job (issue 15 item 2): the orphaned job process notices and
stops without marking the job failed; the restarted coordinator resumes the job from its last
checkpointed round and the job completes, its rounds contiguous."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloud_coordinator.apps.client import AppsClient
from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from edge_agent import enroll as enroll_mod
from edge_agent.apps.install import install_bundle
from edge_agent.apps.store import AppStore
from edge_agent.catalog.store import Catalog
from silolink.apps.fab import FabLimits, build_fab
from silolink.config import TrainingConfig
from tests import support
from tests.integration.test_apps_training import RUN_CONFIG_SERVER, app
from tests.integration.test_exchange_crash import spawn


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may be slow to reap it)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def job_processes(data: Path) -> list[int]:
    """Job processes of the coordinator in ``data`` still running, wherever they hang now."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cloud_coordinator.training.runner" in command and str(data).encode() in command:
            found.append(int(entry.name))
    return [pid for pid in found if running(pid)]


def job_state(data: Path, job_id: str) -> str:
    with sqlite3.connect(f"file:{data / 'state' / 'coordinator.db'}?mode=ro", uri=True) as db:
        return db.execute("select state from training_jobs where id = ?", [job_id]).fetchone()[0]


def test_kill_9_mid_job_then_restart_resumes_from_the_checkpoint(tmp_path):
    data = support.init_coordinator(tmp_path / "coordinator")
    process, endpoints = spawn(data)
    agents = []
    try:
        with OperatorClient(OperatorCredentials.resolve(data_dir=data)) as op:
            app_dir = app(
                tmp_path, "durable", RUN_CONFIG_SERVER, "slow_app", config={"num-server-rounds": 8, "lr": 0.5}
            )
            AppsClient(op).push(app_dir)
            for name in ("hospital-a", "hospital-b"):
                added = op.add_site(name, "hospital")
                enroll_mod.enroll(tmp_path / name, endpoints["address"], added["token"], added["ca_fingerprint"],
                                  endpoints["enroll_address"])  # fmt: skip
                agent = support.start_agent(tmp_path / name, training=TrainingConfig(datasets=("rows",)))
                agents.append(agent)
                store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
                install_bundle(store, build_fab(app_dir), "local", FabLimits())  # the site admin approves it
                csv = tmp_path / f"{name}.csv"
                csv.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
                Catalog.open(agent.layout.catalog_db).import_csv(csv, "rows", label="label")
            for agent in agents:
                assert agent.wait_connected(10)
            job_id = op.start_training(app="durable", dataset="rows", sites=["kind=hospital"])["job"]
            support.wait_for(lambda: len(op.get_job(job_id)["rounds"]) >= 3, 60, "three rounds")
        (job_process,) = children(process.pid)
        process.kill()  # kill -9: no shutdown hook runs
        process.wait()
        support.wait_for(lambda: not running(job_process), 10, "the orphaned job process to stop")
        assert job_state(data, job_id) == "running"  # it stopped without a word: the job is not failed
        log = (data / "training" / job_id / "server.log").read_text()
        assert "the coordinator is gone; this job process stops without ending the job" in log

        process, endpoints = spawn(data, listen=endpoints["address"])  # the agents reconnect to the same port
        with OperatorClient(OperatorCredentials.resolve(data_dir=data)) as op:
            support.wait_for(
                lambda: op.get_job(job_id)["state"] not in ("queued", "running"), 60, "the resumed job to end"
            )
            job = op.get_job(job_id)
        assert job["state"] == "completed", job["error"]
        assert job["resumed"] == 1 and job["resumed_from_round"] >= 2, job
        assert [r["round"] for r in job["rounds"]] == list(range(1, 9))
        assert all(r["participants"] == ["hospital-a", "hospital-b"] for r in job["rounds"])
        log = (data / "training" / job_id / "server.log").read_text()
        assert f"resuming after round {job['resumed_from_round']} of 8 (from its checkpoint)" in log
    finally:
        for agent in agents:
            agent.stop(0)
        if process.poll() is None:
            process.terminate()
            process.wait(20)
        assert not job_processes(data), "a job process outlived its coordinator"
