"""Run every command of both tools where it cannot succeed (no credentials, no agent, an empty
data directory), with and without --json, and report what each printed. Commands are found
by walking the click groups, so new ones are swept too.

Run as ``python -m tests.e2e.cli_sweep TMPDIR`` (a process of its own: commands such as
``serve`` install signal handlers and configure logging). Prints one JSON list.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from cloud_coordinator.cli import main as coordinator_main
from edge_agent.cli import main as agent_main

TOOLS = {"cloud-coordinator": coordinator_main, "edge-agent": agent_main}
# Dummy values a command parses but cannot act on here: nothing listens on port 1.
NAMED = {"coordinator": "127.0.0.1:1", "enroll_address": "127.0.0.1:1", "ca_fingerprint": "sha256:00", "token": "t"}


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def required_args(command: click.Command, tmp: Path, missing: Path) -> list[str]:
    existing = tmp / "input.csv"
    existing.write_text("a,b\n1,2\n")
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        if param.name in NAMED:
            value = NAMED[param.name]
        elif isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        elif isinstance(param.type, click.IntRange):
            value = str(param.type.min or 1)
        elif isinstance(param.type, click.Path):
            value = str(existing if param.type.exists or param.param_type_name == "argument" else missing)
        else:
            value = "x"
        if isinstance(param, click.Option):
            args += [param.opts[0], value]
        else:
            args.append(value)
    return args


def sweep(tmp: Path) -> list[dict]:
    runner = CliRunner()
    clean_env = {name: None for name in os.environ if name.startswith("SILOLINK_")}
    results = []
    for tool, main in TOOLS.items():
        for path, command in commands(main):
            if path == ("serve",) or path == ("run",):
                continue  # daemons: swept by test_cli_errors' config cases, as processes
            names = {p.name for p in command.params}
            variants = [[]]
            if "as_json" in names:
                variants.append(["--json"])
            if "credentials_file" in names:
                variants.append(["--credentials", str(tmp / "nowhere" / "credentials.json")])
            for extra in variants:
                # A directory of its own each time: some commands create what they are given (init).
                args = [*path, *required_args(command, tmp, tmp / f"missing-{len(results)}"), *extra]
                result = runner.invoke(main, args, env=clean_env)
                crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
                results.append(
                    {
                        "command": f"{tool} {' '.join(args)}",
                        "exit_code": result.exit_code,
                        "stderr": result.stderr,
                        "crashed": repr(result.exception) if crashed else None,
                        "operator": "credentials_file" in names,
                        "json": "--json" in extra,
                        "credentials": str(tmp / "nowhere" / "credentials.json") if "--credentials" in extra else None,
                    }
                )
    return results


if __name__ == "__main__":
    print(json.dumps(sweep(Path(sys.argv[1]))))
