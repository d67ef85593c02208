"""The commands the systemd unit, the install script and the container entrypoints run,
run here as real processes on free loopback ports: a coordinator prepared and served by
its entrypoint with the compose environment, one site enrolled by the compose init step
and run by the agent entrypoint, one site enrolled as the install script does and run by
the unit's ExecStart under a real sd_notify socket. Both must come online."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from silolink.polling import wait_for

from .helpers import (
    BIN,
    DEPLOY,
    clean_environ,
    compose,
    free_port,
    image_env,
    map_paths,
    resolve_cli,
    unit_settings,
)

COORDINATOR_ENTRYPOINT = DEPLOY / "docker" / "coordinator-entrypoint.sh"
AGENT_ENTRYPOINT = DEPLOY / "docker" / "agent-entrypoint.sh"


@pytest.fixture
def short_tmp():
    # unix socket paths (the agent's local API, sd_notify) must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sl-deploy-", dir="/tmp") as path:
        yield Path(path)


class Host:
    """This machine standing in for the compose project: one directory per named volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = compose()
        self.mtls_port, self.enroll_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.sockets: list[socket.socket] = []

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """The service's container environment with its volume paths mapped to directories here."""
        spec = self.spec["services"][service]
        mapping = {}
        for volume in spec["volumes"]:
            name, container_path = volume.split(":")[:2]
            mapping[container_path] = self.root / name
            (self.root / name).mkdir(exist_ok=True)
        dockerfile = (DEPLOY / spec["build"]["context"] / spec["build"]["dockerfile"]).resolve()
        env = {**image_env(dockerfile), **spec.get("environment", {})}
        env = {k: map_paths(str(v), mapping) for k, v in env.items()}
        return {**clean_environ(), **env, **extra}

    def coordinator_env(self) -> dict[str, str]:
        # What differs from the compose network: loopback ports, and the name sites dial.
        return self.env(
            "coordinator",
            SILOLINK_COORDINATOR_LISTEN=f"127.0.0.1:{self.mtls_port}",
            SILOLINK_COORDINATOR_ENROLL_LISTEN=f"127.0.0.1:{self.enroll_port}",
            SILOLINK_COORDINATOR_PUBLIC_ADDRESS=f"localhost:{self.mtls_port}",
            SILOLINK_COORDINATOR_PUBLIC_ENROLL_ADDRESS=f"localhost:{self.enroll_port}",
            SILOLINK_COORDINATOR_METRICS_LISTEN="",
            SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S="0.3",
        )

    def agent_env(self, service: str, **extra: str) -> dict[str, str]:
        return self.env(
            service, SILOLINK_AGENT_RECONNECT_INITIAL_S="0.05", SILOLINK_AGENT_RECONNECT_MAX_S="0.5", **extra
        )

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stderr}"
        return proc

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=(self.root / f"{log}.log").open("wb")
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for sock in self.sockets:
            sock.close()


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    resolve_cli(test[1:])
    return test[1:]


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(20)


def test_unit_and_entrypoint_commands_bring_sites_online(short_tmp):
    host = Host(short_tmp)
    try:
        _bring_up_and_check(host)
    finally:
        host.stop_all()


def _bring_up_and_check(host: Host) -> None:
    services = host.spec["services"]
    coordinator_env = host.coordinator_env()

    # The coordinator container: `serve` prepares (init for SILOLINK_HOSTNAMES), then serves.
    coordinator = host.spawn([str(COORDINATOR_ENTRYPOINT), *services["coordinator"]["command"]], coordinator_env, "c")
    coordinator_health = healthcheck_argv(services["coordinator"])
    wait_for(
        lambda: (
            subprocess.run(coordinator_health, env=coordinator_env, capture_output=True).returncode == 0
            or coordinator.poll() is not None
        ),
        30,
        "the coordinator's health check",
    )
    assert coordinator.poll() is None, (host.root / "c.log").read_text()

    # Site 1, as compose does it: the init step adds and enrolls the site, then the agent runs.
    enroll_env = host.agent_env("enroll-hospital-a", SILOLINK_OPERATOR_COORDINATOR=f"localhost:{host.mtls_port}")
    host.run([str(AGENT_ENTRYPOINT), *services["enroll-hospital-a"]["command"]], enroll_env)
    again = host.run([str(AGENT_ENTRYPOINT), *services["enroll-hospital-a"]["command"]], enroll_env)
    assert "enrolled already" in again.stdout  # a restarted init step changes nothing
    agent_env = host.agent_env("agent-hospital-a")
    compose_agent = host.spawn([str(AGENT_ENTRYPOINT), *services["agent-hospital-a"]["command"]], agent_env, "a")

    # Site 2, as a site admin does it: the operator adds the site, the install script enrolls
    # it, systemd runs the unit's ExecStart and waits for READY=1.
    added = json.loads(
        host.run(
            [str(COORDINATOR_ENTRYPOINT), "sites", "add", "st-marys", "--kind", "hospital", "--json"], coordinator_env
        ).stdout
    )
    site_dir = host.root / "var-lib-silolink"
    mapping = {"/opt/silolink/venv/bin": BIN, "/var/lib/silolink": site_dir}
    dry_run = host.run(
        [
            str(DEPLOY / "systemd" / "install-agent.sh"),
            "--dry-run",
            "--coordinator",
            added["coordinator_address"],
            "--ca-fingerprint",
            added["ca_fingerprint"],
            "--enroll-address",
            added["enroll_address"],
        ],
        {**clean_environ(), "SILOLINK_ENROLL_TOKEN": added["token"]},
    ).stdout
    enroll_line = next(line for line in dry_run.splitlines() if " enroll " in line)
    argv = enroll_line.removeprefix("+ ").split(" -- ", 1)[1].split()
    argv = [map_paths(a, mapping) for a in argv]
    resolve_cli([Path(argv[0]).name, *argv[1:]])
    host.run(argv, {**clean_environ(), "SILOLINK_ENROLL_TOKEN": added["token"]})

    unit = unit_settings(DEPLOY / "systemd" / "silolink-agent.service")
    assert unit["Type"] == ["notify"]
    exec_start = [map_paths(a, mapping) for a in unit["ExecStart"][0].split()]
    resolve_cli([Path(exec_start[0]).name, *exec_start[1:]])
    unit_env = dict(item.split("=", 1) for line in unit.get("Environment", []) for item in line.split())
    notify_path = host.root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host.sockets.append(notify)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    systemd_agent = host.spawn(
        exec_start,
        {**clean_environ(), **unit_env, "NOTIFY_SOCKET": str(notify_path), "SILOLINK_AGENT_RECONNECT_MAX_S": "0.5"},
        "s",
    )
    assert notify.recv(256) == b"READY=1", (host.root / "s.log").read_text()

    # Both sites online at the coordinator.
    def both_online():
        listed = json.loads(host.run([str(COORDINATOR_ENTRYPOINT), "sites", "list", "--json"], coordinator_env).stdout)
        states = {s["name"]: s["state"] for s in listed}
        return states if states == {"hospital-a": "online", "st-marys": "online"} else None

    wait_for(both_online, 20, "both sites online")

    # The agent's container health check, which also demands a live control stream.
    health = host.run(healthcheck_argv(services["agent-hospital-a"]) + ["--json"], agent_env)
    assert json.loads(health.stdout) == {"local_api": "SERVING", "link": "connected", "site": "hospital-a"}

    # Everything stops cleanly on SIGTERM, as `docker stop` and `systemctl stop` send.
    assert stop(systemd_agent) == 0
    assert notify.recv(256) == b"STOPPING=1"
    assert stop(compose_agent) == 0
    assert stop(coordinator) == 0
    after = subprocess.run(coordinator_health, env=coordinator_env, capture_output=True, text=True)
    assert after.returncode == 6 and "no coordinator is running" in after.stderr
