"""Reading the deployment files the way systemd, Docker, compose and kubectl would, and
checking that every command they name exists in our CLIs."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import socket
import sys
from pathlib import Path

import click
import yaml

from cloud_coordinator.cli import main as coordinator_cli
from edge_agent.cli import main as agent_cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the console scripts installed beside this interpreter
CLIS = {"cloud-coordinator": coordinator_cli, "edge-agent": agent_cli}
# Commands that run without loading their whole CLI: module to the command line they stand for.
MODULES = {
    "cloud_coordinator.healthcheck": ["cloud-coordinator", "health"],
    "edge_agent.healthcheck": ["edge-agent", "health"],
}


def resolve_cli(argv: list[str]) -> click.Command:
    """The click command ``argv`` runs (``["cloud-coordinator", "health", "--timeout", "5s"]``);
    fails if a subcommand or an option does not exist."""
    if argv[:2] == ["python", "-m"]:
        standing_for = MODULES[argv[2]]
        # The module's command must be the very one the CLI registers.
        assert importlib.import_module(argv[2]).health is resolve_cli(standing_for)
        argv = standing_for + argv[3:]
    tool, *args = argv
    command: click.Command = CLIS[Path(tool).name]
    while args and isinstance(command, click.Group) and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{' '.join(argv)}: no command {args[0]!r} in {tool}"
        command, args = sub, args[1:]
    known = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{' '.join(argv)}: {tool} has no option {arg}"
    return command


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """Each stage's instructions as (KEYWORD, rest), continuation lines joined."""
    stages: list[list[tuple[str, str]]] = []
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def image_env(dockerfile: Path) -> dict[str, str]:
    """The final stage's ENV (``$PATH`` references dropped: the caller sets PATH)."""
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_stages(dockerfile)[-1]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                if "$" not in value:
                    env[key] = value
    return env


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def map_paths(value: str, mapping: dict[str, Path]) -> str:
    """Container or host paths in ``value`` replaced by test directories (longest first)."""
    for container_path in sorted(mapping, key=len, reverse=True):
        value = re.sub(re.escape(container_path) + r"(?=/|$|\s)", str(mapping[container_path]), value)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SILOLINK_", "NOTIFY_SOCKET"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
