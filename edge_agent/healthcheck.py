"""``edge-agent health``: does the agent running here answer, and is it connected?

Container health checks run it next to the agent. It asks the standard grpc.health.v1
service on the agent's local API (the address the running agent wrote to its data
directory), then the agent's status for the state of its link to the coordinator. The
command lives here rather than in ``cli/`` so a health check can run it as
``python -m edge_agent.healthcheck`` without importing the daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from silolink import errors
from silolink.cli_util import echo_json, handle_errors, json_option, parse_duration_s
from silolink.rpc import health as health_rpc

from .client import LocalClient


def check(data_dir: Path, timeout_s: float = 5.0, require_connected: bool = False) -> dict[str, Any]:
    """``{"local_api": "SERVING", "link": "connected", "site": ...}`` or raise naming the failure."""
    with LocalClient.for_data_dir(data_dir, timeout_s=timeout_s) as client:
        serving = health_rpc.check(client.channel, f"the agent's local API at {client.address}", timeout_s=timeout_s)
        info = client.status()
    if require_connected and info["state"] != "connected":
        raise errors.Unavailable(
            f"the agent serves but is {info['state']}, not connected to {info['coordinator']}"
            + (f": {info['last_error']}" if info["last_error"] else "")
        )
    return {"local_api": serving, "link": info["state"], "site": info["site"]}


@click.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SILOLINK_AGENT_DATA_DIR",
    help="The agent's data directory (e.g. /var/lib/silolink).",
)
@click.option("--timeout", default="5s", show_default=True, help="Give up after this long.")
@click.option(
    "--require-connected", is_flag=True, help="Fail unless the agent is connected to the coordinator right now."
)
@json_option
@handle_errors
def health(data_dir: Path, timeout: str, require_connected: bool, as_json: bool) -> None:
    """Exit 0 if the agent on DATA_DIR serves the gRPC health service on its local API."""
    result = check(data_dir, parse_duration_s(timeout), require_connected)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"local API: {result['local_api']}, link: {result['link']} (site {result['site']})")


if __name__ == "__main__":
    health(prog_name="edge-agent health")
