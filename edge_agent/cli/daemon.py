"""``enroll``, ``run`` and ``status``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

from silolink import logs
from silolink.cli_util import echo_json, handle_errors, stop_event_on_signals

from .. import enroll as enroll_mod
from ..client import LocalClient
from ..daemon import Agent, load_config
from .options import data_dir_option, json_option

log = logging.getLogger(__name__)


@click.command()
@click.option("--coordinator", required=True, metavar="HOST:PORT", help="The coordinator's address (mTLS port).")
@click.option("--token", required=True, envvar="SILOLINK_ENROLL_TOKEN", help="The one-time token from the operator.")
@click.option("--ca-fingerprint", required=True, help="The coordinator CA's fingerprint from the operator.")
@click.option(
    "--enroll-address",
    metavar="HOST:PORT",
    help="The enrollment listener (default: the coordinator's host, its port + 1, as the coordinator binds it).",
)
@data_dir_option
@json_option
@handle_errors
def enroll(
    coordinator: str, token: str, ca_fingerprint: str, enroll_address: str | None, data_dir: Path, as_json: bool
) -> None:
    """Make this site's key, verify the coordinator, and get the site's certificate."""
    result = enroll_mod.enroll(data_dir, coordinator, token, ca_fingerprint, enroll_address)
    if as_json:
        echo_json({**dataclasses.asdict(result), "data_dir": str(result.data_dir)})
        return
    click.echo(
        f"enrolled as site {result.site} ({result.kind}); certificate valid until {result.certificate_expires_at}"
    )
    click.echo(f"next: edge-agent run --data-dir {data_dir}")


@click.command()
@data_dir_option
@click.option(
    "--listen", metavar="ADDRESS", help="Local API address: unix:PATH or HOST:PORT (default unix:agent.sock)."
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@handle_errors
def run(data_dir: Path, listen: str | None, log_level: str | None) -> None:
    """Run the agent daemon until SIGTERM or SIGINT."""
    cfg = load_config(data_dir, local_listen=listen, log_level=log_level)
    logs.configure(cfg.log_level)
    stop = stop_event_on_signals()
    agent = Agent(data_dir, cfg).start()
    stop.wait()
    log.info("shutting down")
    agent.stop()


@click.command()
@data_dir_option
@json_option
@handle_errors
def status(data_dir: Path, as_json: bool) -> None:
    """Show the running agent's site, link state and certificate."""
    with LocalClient.for_data_dir(data_dir) as client:
        info = client.status()
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:24} {'-' if value is None else value}")
