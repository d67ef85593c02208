"""``health``: the check container health checks and Kubernetes probes run."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, parse_duration_s

from .. import healthcheck
from .options import json_option
from .server import data_dir_option


@click.command()
@data_dir_option
@click.option("--timeout", default="5s", show_default=True, help="Give up on a listener after this long.")
@click.option("--mtls", is_flag=True, help="Also check the mTLS listener with this host's operator credentials.")
@json_option
@handle_errors
def health(data_dir: Path, timeout: str, mtls: bool, as_json: bool) -> None:
    """Exit 0 if the coordinator running on DATA_DIR serves the gRPC health service over TLS."""
    result = healthcheck.check(data_dir, timeout_s=parse_duration_s(timeout), mtls=mtls)
    if as_json:
        echo_json(result)
    else:
        click.echo(", ".join(f"{listener}: {status}" for listener, status in result.items()))
