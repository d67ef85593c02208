"""The server factory both daemons use: one grpc.Server with the guard interceptor,
standard health and reflection services, and every mounted service (built-in or from an
extension) behind the same checks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from silolink import errors
from silolink.identity import Role
from silolink.rpc.guard import Authenticator, GuardInterceptor, PermissionTable, RpcObserver
from silolink.rpc.reflection import SERVICE_NAMES as REFLECTION_SERVICES
from silolink.rpc.reflection import add_reflection

log = logging.getLogger(__name__)

EVERYONE = frozenset(Role)
KEEPALIVE_SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Two daemons must never share a port silently.
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True)
class ServiceMount:
    """A gRPC service to serve, and who may call each of its methods.

    ``register`` adds the servicer to a server (usually a generated
    ``add_FooServiceServicer_to_server`` call; the server may be a ``grpc.Server`` or a
    ``grpc.aio.Server``, so only call its handler-adding methods). ``rules`` maps each
    method's short name to the roles allowed to call it; every method of the service
    needs a rule. ``call_classes`` optionally puts a method in a named class of calls (its
    own threads and limit) on an aio server; by default a call's class follows its
    caller's role (see ``silolink.rpc.aio_guard``).
    """

    name: str
    register: Callable[[grpc.Server], None]
    rules: Mapping[str, Iterable[Role]] = field(default_factory=dict)
    call_classes: Mapping[str, str] = field(default_factory=dict)

    def permissions(self) -> dict[str, frozenset[Role]]:
        """The rules as full method paths, checked against the service's descriptor."""
        try:
            service = descriptor_pool.Default().FindServiceByName(self.name)
        except KeyError:
            raise errors.FailedPrecondition(
                f"service {self.name} is not known; import its generated _pb2 module first"
            ) from None
        methods = {m.name for m in service.methods}
        missing, extra = methods - set(self.rules), set(self.rules) - methods
        if missing or extra:
            raise errors.FailedPrecondition(
                f"service {self.name}: permission rules must name each method exactly; "
                f"missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        return {f"/{self.name}/{m}": frozenset(roles) for m, roles in self.rules.items()}


def build_server(
    mounts: Sequence[ServiceMount],
    authenticate: Authenticator,
    *,
    max_workers: int,
    max_message_bytes: int,
    observer: RpcObserver | None = None,
) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with every mount, health and reflection; not yet bound or started."""
    table = PermissionTable()
    for mount in mounts:
        for method, roles in mount.permissions().items():
            table.allow(method, roles)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    for method in ("Check", "Watch", "List"):
        table.allow(f"/{health_name}/{method}", EVERYONE)
    for name in REFLECTION_SERVICES:
        table.allow(f"/{name}/ServerReflectionInfo", EVERYONE)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[GuardInterceptor(authenticate, table, observer)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *KEEPALIVE_SERVER_OPTIONS,
        ],
        maximum_concurrent_rpcs=max_workers,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for mount in mounts:
        mount.register(server)
    names = [m.name for m in mounts]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    add_reflection(server, [*names, health_name])
    return server, health_servicer


def bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``address`` (``host:port``, port 0 for any, or ``unix:PATH``); return the port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise errors.Unavailable(f"cannot listen on {address}: {e}") from None
    return check_bound(address, port)


def check_bound(address: str, port: int) -> int:
    """``port``, unless gRPC could not bind ``address`` (it answers port 0 then)."""
    if port == 0 and not address.startswith("unix:"):
        raise errors.Unavailable(f"cannot listen on {address}: address in use or not available")
    return port


def set_not_serving(health_servicer: health.HealthServicer) -> None:
    """Tell health checkers we are going away (before a graceful stop)."""
    health_servicer.enter_graceful_shutdown()
