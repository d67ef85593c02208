"""The demo's world: real daemon processes, their data directories and an operator client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from cloud_coordinator.operator_client import OperatorClient, OperatorCredentials
from silolink.polling import wait_for

# Quick heartbeats so the demo shows live state within a second. Every demo site shares this
# one host: the work queue places jobs by what sites declare, not by the host's load average.
DEMO_ENV = {
    "SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S": "1",
    "SILOLINK_AGENT_RECONNECT_MAX_S": "2",
    "SILOLINK_COORDINATOR_SCHEDULING__HEARTBEAT_LOAD": "false",
    "SILOLINK_COORDINATOR_SCHEDULING__TICK_S": "0.2",
    "SILOLINK_AGENT_STUDIES__BUSY_LOAD_PER_CPU": "1000",
}


def say(command: str) -> None:
    """Show the command line a human would type for what the demo does next."""
    click.secho(f"  $ {command}", fg="bright_black")


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen
    log_path: Path


@dataclass
class DemoWorld:
    root: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)
    sites: dict[str, dict] = field(default_factory=dict)  # name -> {"kind", "data_dir"}
    trained_model: str = ""  # "name:version" the training step registered
    _operator: OperatorClient | None = None

    @property
    def coordinator_dir(self) -> Path:
        return self.root / "coordinator"

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    def spawn(self, name: str, args: list[str], ready_file: Path, timeout_s: float = 30.0) -> Daemon:
        """Start ``python -m args`` with its log in the work dir; wait for ``ready_file``."""
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        ready_file.unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("wb"),
            env={**os.environ, **DEMO_ENV},
        )
        daemon = Daemon(name, process, log_path)
        self.daemons[name] = daemon
        deadline = time.monotonic() + timeout_s
        while not ready_file.exists():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {timeout_s:.0f} s; see {log_path}")
            time.sleep(0.05)
        return daemon

    def operator(self) -> OperatorClient:
        if self._operator is None:
            self._operator = OperatorClient(OperatorCredentials.resolve(data_dir=self.coordinator_dir))
        return self._operator

    def wait_until(self, predicate, timeout_s: float, what: str):
        return wait_for(predicate, timeout_s, what, interval_s=0.1)

    def endpoints(self) -> dict:
        return json.loads((self.coordinator_dir / "run" / "endpoints.json").read_text())

    def stop_all(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM agents first, then the coordinator; True if every one exited with 0."""
        if self._operator is not None:
            self._operator.close()
            self._operator = None
        clean = True
        order = [n for n in self.daemons if n != "coordinator"] + (
            ["coordinator"] if "coordinator" in self.daemons else []
        )
        for name in order:
            daemon = self.daemons[name]
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
            try:
                code = daemon.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                code = daemon.process.wait()
            if code != 0:
                clean = False
                click.secho(f"  {name} exited with code {code}", fg="red")
        self.daemons.clear()
        return clean

    def show_logs(self, lines: int = 15) -> None:
        for daemon in self.daemons.values():
            if daemon.log_path.exists():
                tail = daemon.log_path.read_text(errors="replace").splitlines()[-lines:]
                click.secho(f"--- last lines of {daemon.log_path}", fg="yellow", err=True)
                click.echo("\n".join(tail), err=True)


def indent(text: str) -> str:
    """``text`` indented two spaces, as the demo prints results under a command."""
    return "\n".join("  " + line for line in text.splitlines())
