"""The real command-line tools as an operator and a site admin use them, as processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import wait_for

ENV = {
    **os.environ,
    "SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.3",
    "SILOLINK_AGENT_RECONNECT_MAX_S": "0.5",
}


def cli(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    module = {"cloud-coordinator": "cloud_coordinator", "edge-agent": "edge_agent", "silolink": "silolink_demo.cli"}[
        tool
    ]
    runner = (
        [sys.executable, "-c", f"from {module} import main; main()"]
        if tool == "silolink"
        else [sys.executable, "-m", module]
    )
    proc = subprocess.run([*runner, *args], capture_output=True, text=True, env=ENV, timeout=60)
    if check:
        assert proc.returncode == 0, f"{tool} {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=ENV
    )


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(20)


def serve(data: Path, log: Path, listen: str = "127.0.0.1:0", enroll_listen: str = "127.0.0.1:0"):
    process = spawn(
        "cloud_coordinator",
        "serve",
        *("--data-dir", str(data), "--listen", listen, "--enroll-listen", enroll_listen, "--metrics-listen", ""),
        log=log,
    )
    wait_for(lambda: (data / "run" / "endpoints.json").exists(), 20, "coordinator to start")
    return process


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "coord"
    init = json.loads(cli("cloud-coordinator", "init", "--data-dir", str(data), "--json").stdout)
    assert init["ca_fingerprint"].startswith("sha256:")
    process = serve(data, tmp_path / "coord.log")
    yield data, process
    if process.poll() is None:
        stop(process)


def add_and_enroll(data: Path, agent_dir: Path, name: str, *tags: str) -> dict:
    """``sites add`` at the coordinator, then ``edge-agent enroll`` with its token; the add's reply."""
    tag_args = [arg for tag in tags for arg in ("--tag", tag)]
    added = json.loads(
        cli(
            "cloud-coordinator",
            *("sites", "add", name, "--kind", "hospital", *tag_args, "--data-dir", str(data), "--json"),
        ).stdout
    )
    assert set(added) >= {"site", "token", "ca_fingerprint", "expires_at"}
    enrolled = json.loads(
        cli(
            "edge-agent",
            "enroll",
            *("--coordinator", added["coordinator_address"], "--enroll-address", added["enroll_address"]),
            *("--token", added["token"], "--ca-fingerprint", added["ca_fingerprint"]),
            *("--data-dir", str(agent_dir), "--json"),
        ).stdout
    )
    assert enrolled["site"] == name
    return added


def site_online(data: Path) -> dict | None:
    listed = json.loads(cli("cloud-coordinator", "sites", "list", "--data-dir", str(data), "--json").stdout)
    return listed[0] if listed and listed[0]["state"] == "online" and listed[0]["last_heartbeat"] else None


def test_operator_and_site_admin_workflow(served, tmp_path):
    data, coordinator = served
    agent_dir = tmp_path / "agent"
    added = add_and_enroll(data, agent_dir, "hospital-a", "region=north")
    agent = spawn(
        "edge_agent", "run", "--data-dir", str(agent_dir), "--listen", "127.0.0.1:0", log=tmp_path / "agent.log"
    )
    listed = wait_for(lambda: site_online(data), 20, "site online")
    assert set(listed) >= {"name", "kind", "state", "last_heartbeat", "version"} and listed["version"] == "0.1.0"
    status = json.loads(cli("edge-agent", "status", "--data-dir", str(agent_dir), "--json").stdout)
    assert status["state"] == "connected" and status["site"] == "hospital-a"

    # A remote operator uses only the credentials file and an address.
    remote = cli(
        "cloud-coordinator",
        "sites",
        "list",
        "--credentials",
        str(data / "operator" / "credentials.json"),
        "--coordinator",
        added["coordinator_address"],
    )
    assert "hospital-a" in remote.stdout and "online" in remote.stdout

    revoked = json.loads(
        cli("cloud-coordinator", "sites", "revoke", "hospital-a", "--data-dir", str(data), "--json").stdout
    )
    assert revoked["state"] == "revoked"
    wait_for(
        lambda: (
            json.loads(cli("edge-agent", "status", "--data-dir", str(agent_dir), "--json").stdout)["state"] == "revoked"
        ),
        10,
        "agent revoked",
    )

    assert stop(agent) == 0
    assert stop(coordinator) == 0
    assert not (data / "run" / "endpoints.json").exists()


def test_a_restart_ends_streams_with_the_process_and_agents_come_back(served, tmp_path):
    """SIGTERM drains calls and exits without ending each agent stream on its own (slow
    with thousands); the agent sees its connection close and reconnects to the new process."""
    data, coordinator = served
    agent_dir = tmp_path / "agent"
    add_and_enroll(data, agent_dir, "hospital-a")
    agent = spawn("edge_agent", "run", "--data-dir", str(agent_dir), "--listen", "127.0.0.1:0", log=tmp_path / "a.log")
    try:
        wait_for(lambda: site_online(data), 20, "site online")
        endpoints = json.loads((data / "run" / "endpoints.json").read_text())
        assert stop(coordinator) == 0
        log = (tmp_path / "coord.log").read_text()
        assert "1 agent streams end with the process" in log and "coordinator stopped" in log, log
        assert not (data / "run" / "endpoints.json").exists()

        restarted = serve(data, tmp_path / "coord2.log", endpoints["address"], endpoints["enroll_address"])
        try:
            wait_for(lambda: site_online(data), 30, "the site back online after the restart")
            status = json.loads(cli("edge-agent", "status", "--data-dir", str(agent_dir), "--json").stdout)
            assert status["state"] == "connected"
        finally:
            assert stop(restarted) == 0
    finally:
        assert stop(agent) == 0


def test_failures_print_one_clear_line_and_exit_non_zero(served, tmp_path):
    data, _ = served
    proc = cli("cloud-coordinator", "sites", "revoke", "nobody", "--data-dir", str(data), check=False)
    assert proc.returncode == 3 and proc.stderr.startswith("error: no site named 'nobody'")
    assert "Traceback" not in proc.stderr
    proc = cli(
        "edge-agent",
        "enroll",
        "--coordinator",
        "127.0.0.1:1",
        "--token",
        "slt_x",
        "--ca-fingerprint",
        "ab" * 32,
        "--data-dir",
        str(tmp_path / "a"),
        check=False,
    )
    assert proc.returncode == 6 and "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("cloud-coordinator", "init", "--data-dir", str(data), check=False)
    assert proc.returncode == 4 and "already holds a coordinator" in proc.stderr


def test_demo_runs_end_to_end():
    started = time.monotonic()
    proc = cli("silolink", "demo")
    assert "every daemon stopped cleanly" in proc.stdout
    for name in ("hospital-a", "hospital-b", "factory-a"):
        assert name in proc.stdout
    assert time.monotonic() - started < 120
