"""``health``: the check container health checks run against a running agent."""

from __future__ import annotations

from pathlib import Path

import click

from silolink import errors
from silolink.cli_util import echo_json, handle_errors, parse_duration_s
from silolink.rpc import health as health_rpc

from ..client import LocalClient
from .options import data_dir_option, json_option


@click.command()
@data_dir_option
@click.option("--timeout", default="5s", show_default=True, help="Give up after this long.")
@click.option(
    "--require-connected", is_flag=True, help="Fail unless the agent is connected to the coordinator right now."
)
@json_option
@handle_errors
def health(data_dir: Path, timeout: str, require_connected: bool, as_json: bool) -> None:
    """Exit 0 if the agent on DATA_DIR serves the gRPC health service on its local API."""
    timeout_s = parse_duration_s(timeout)
    with LocalClient.for_data_dir(data_dir, timeout_s=timeout_s) as client:
        serving = health_rpc.check(client.channel, f"the agent's local API at {client.address}", timeout_s=timeout_s)
        info = client.status()
    if require_connected and info["state"] != "connected":
        raise errors.Unavailable(
            f"the agent serves but is {info['state']}, not connected to {info['coordinator']}"
            + (f": {info['last_error']}" if info["last_error"] else "")
        )
    result = {"local_api": serving, "link": info["state"], "site": info["site"]}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"local API: {serving}, link: {info['state']} (site {info['site']})")
