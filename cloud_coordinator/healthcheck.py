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
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from silolink import errors
from silolink.rpc import health
from silolink.rpc.channels import mtls_channel, split_address

from .app import load_config
from .layout import CoordinatorLayout
from .operator_client import OperatorCredentials


def running_endpoints(layout: CoordinatorLayout) -> dict:
    try:
        return json.loads(layout.endpoints.read_text())
    except FileNotFoundError:
        raise errors.Unavailable(f"no coordinator is running for {layout.root} (no {layout.endpoints})") from None
    except ValueError:
        raise errors.Unavailable(f"{layout.endpoints} is being written; try again") from None


def verified_name(data_dir: Path) -> str:
    """The host name sites dial, which the server certificate must cover."""
    cfg = load_config(data_dir)
    if cfg.public_address:
        return split_address(cfg.public_address)[0]
    return cfg.hostnames[0] if cfg.hostnames else "localhost"


def check(data_dir: Path, timeout_s: float = 5.0, mtls: bool = False) -> dict[str, str]:
    """``{"enroll": "SERVING", ...}`` for each listener checked, or raise naming the failure."""
    layout = CoordinatorLayout(Path(data_dir).resolve())
    endpoints = running_endpoints(layout)
    options = [("grpc.ssl_target_name_override", verified_name(layout.root))]
    result = {}
    address = endpoints["enroll_address"]
    ca_pem = layout.ca_cert.read_bytes()
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca_pem), options=options) as channel:
        result["enroll"] = health.check(channel, f"the enrollment listener at {address}", timeout_s=timeout_s)
    if mtls:
        creds = OperatorCredentials.resolve(data_dir=layout.root)
        with mtls_channel(creds.address, creds.credentials) as channel:
            result["mtls"] = health.check(channel, f"the mTLS listener at {creds.address}", timeout_s=timeout_s)
    return result
