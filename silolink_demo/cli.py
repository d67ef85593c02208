"""``silolink``: the project's front door (``silolink demo``)."""

from __future__ import annotations

import click

from silolink import __version__
from silolink.cli_util import CommandGroup


@click.group(cls=CommandGroup)
@click.version_option(__version__, prog_name="silolink")
def main() -> None:
    """silolink: learn from hospital and factory data without moving it."""


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the demo's files here instead of a temp dir.")
def demo(workdir: str | None) -> None:
    """Run a coordinator and agents for two hospitals and a factory here, with real mTLS."""
    from silolink_demo import run_demo

    raise SystemExit(run_demo(workdir))
