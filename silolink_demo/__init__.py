"""``silolink demo``: a coordinator and three sites on this machine, with real mTLS.

The demo runs the real daemons as separate processes (``cloud-coordinator serve``,
``edge-agent run``) in a temporary directory, walks through each capability as a step
(``steps.STEPS``), and stops everything cleanly. Capabilities add their own step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from .steps import STEPS
from .world import DemoWorld


def run_demo(workdir: str | None = None) -> int:
    """Run every step; return the process exit code (0 when all went well)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="silolink-demo-") as tmp:
        root = Path(workdir).resolve() if workdir else Path(tmp)
        world = DemoWorld(root)
        click.secho(f"silolink demo in {root}", bold=True)
        try:
            for number, step in enumerate(STEPS, 1):
                click.secho(f"\n[{number}/{len(STEPS)}] {step.__doc__.strip().splitlines()[0]}", bold=True, fg="cyan")
                step(world)
        except Exception as e:  # noqa: BLE001 - report, then still stop everything
            click.secho(f"\ndemo failed: {e}", fg="red", err=True)
            world.show_logs()
            world.stop_all()
            return 1
        clean = world.stop_all()
        elapsed = time.monotonic() - started
        if not clean:
            click.secho("some daemons did not stop cleanly", fg="red", err=True)
            world.show_logs()
            return 1
        click.secho(f"\ndemo finished in {elapsed:.1f} s; every daemon stopped cleanly", bold=True, fg="green")
        return 0
