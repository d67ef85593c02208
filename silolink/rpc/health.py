"""A client for the standard ``grpc.health.v1`` service both daemons serve.

Used by ``cloud-coordinator health`` and ``edge-agent health``, which container health
checks and Kubernetes probes run. The caller brings the channel, so the check goes through
the same TLS (and certificate checks) as real traffic.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from silolink import errors
from silolink.rpc.status import from_rpc_error

SERVING = "SERVING"


def check(channel: grpc.Channel, peer: str, service: str = "", timeout_s: float = 5.0) -> str:
    """The serving status of ``service`` ("" is the whole server): ``SERVING`` or raise.

    A server that answers anything but SERVING (NOT_SERVING while it shuts down) raises
    ``Unavailable``; a server that does not answer raises what the call failed with.
    """
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, wait_for_ready=False
        )
    except grpc.RpcError as e:
        raise from_rpc_error(e, peer=peer) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if status != SERVING:
        raise errors.Unavailable(f"{peer} answers but reports {status}")
    return status
