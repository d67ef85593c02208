"""``cloud-coordinator health``: is the coordinator running here serving?

Container health checks and Kubernetes probes run it next to the coordinator. Kubernetes'
native gRPC probe cannot speak TLS and every coordinator listener is TLS (a plaintext port
would expose enrollment tokens), so the probe is this command: it reads the addresses the
running coordinator wrote to ``run/endpoints.json`` and asks the standard health service
over TLS verified against the coordinator's own CA, for the name sites dial. A server
certificate that expired or no longer covers that name fails the check, as it would fail
every site.

The enrollment listener needs no client certificate, so the default check depends on
nothing that can expire on its own (an operator certificate does); ``mtls=True`` also checks
the mTLS listener with the operator credential from the data directory.

The command lives here rather than in ``cli/`` so that probes can run it as
``python -m cloud_coordinator.healthcheck`` without importing every other command: a
quarter of the CPU per probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import grpc

from silolink import config as config_mod
from silolink import errors
from silolink.cli_util import echo_json, handle_errors, json_option, parse_duration_s
from silolink.config import CoordinatorConfig
from silolink.rpc import health as health_rpc
from silolink.rpc.channels import mtls_channel, split_address

from .layout import CoordinatorLayout


def running_endpoints(layout: CoordinatorLayout) -> dict:
    try:
        return json.loads(layout.endpoints.read_text())
    except FileNotFoundError:
        raise errors.Unavailable(f"no coordinator is running for {layout.root} (no {layout.endpoints})") from None
    except ValueError:
        raise errors.Unavailable(f"{layout.endpoints} is being written; try again") from None


def verified_name(layout: CoordinatorLayout) -> str:
    """The host name sites dial, which the server certificate must cover."""
    cfg = config_mod.load(CoordinatorConfig, layout.config, "SILOLINK_COORDINATOR")
    if cfg.public_address:
        return split_address(cfg.public_address)[0]
    return cfg.hostnames[0] if cfg.hostnames else "localhost"


def check(data_dir: Path, timeout_s: float = 5.0, mtls: bool = False) -> dict[str, str]:
    """``{"enroll": "SERVING", ...}`` for each listener checked, or raise naming the failure."""
    layout = CoordinatorLayout(Path(data_dir).resolve())
    endpoints = running_endpoints(layout)
    address = endpoints["enroll_address"]
    credentials = grpc.ssl_channel_credentials(layout.ca_cert.read_bytes())
    options = [("grpc.ssl_target_name_override", verified_name(layout))]
    result = {}
    with grpc.secure_channel(address, credentials, options=options) as channel:
        result["enroll"] = health_rpc.check(channel, f"the enrollment listener at {address}", timeout_s=timeout_s)
    if mtls:
        from .operator_client import OperatorCredentials  # only here: it pulls in the admin API

        creds = OperatorCredentials.resolve(data_dir=layout.root)
        with mtls_channel(creds.address, creds.credentials) as channel:
            result["mtls"] = health_rpc.check(channel, f"the mTLS listener at {creds.address}", timeout_s=timeout_s)
    return result


@click.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SILOLINK_COORDINATOR_DATA_DIR",
    help="The coordinator's data directory.",
)
@click.option("--timeout", default="5s", show_default=True, help="Give up on a listener after this long.")
@click.option("--mtls", is_flag=True, help="Also check the mTLS listener with this host's operator credentials.")
@json_option
@handle_errors
def health(data_dir: Path, timeout: str, mtls: bool, as_json: bool) -> None:
    """Exit 0 if the coordinator running on DATA_DIR serves the gRPC health service over TLS."""
    result = check(data_dir, timeout_s=parse_duration_s(timeout), mtls=mtls)
    if as_json:
        echo_json(result)
    else:
        click.echo(", ".join(f"{listener}: {status}" for listener, status in result.items()))


if __name__ == "__main__":
    health(prog_name="cloud-coordinator health")
