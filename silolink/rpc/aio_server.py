"""grpc.aio servers driven from sync code: an event loop on a thread of its own, and a
server factory with the aio guard, call classes, health and reflection.

The coordinator serves agents this way: a control stream is a coroutine, not a thread, so
ten thousand of them cost memory, not threads. Sync servicers (every capability's, and
extensions') are mounted exactly as on the sync server (``ServiceMount``) and run on the
thread pool of their call's class (see ``silolink.rpc.aio_guard``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from silolink import errors
from silolink.rpc.aio_guard import AioGuard, CallClass, CallClasses
from silolink.rpc.guard import Authenticator, PermissionTable, RpcObserver
from silolink.rpc.reflection import SERVICE_NAMES as REFLECTION_SERVICES
from silolink.rpc.reflection import add_reflection
from silolink.rpc.server import EVERYONE, KEEPALIVE_SERVER_OPTIONS, ServiceMount, check_bound

log = logging.getLogger(__name__)
T = TypeVar("T")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Streams one connection may open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): a
# client cannot open thousands of calls on one connection.
MAX_STREAMS_PER_CONNECTION = 100
# How long past their grace the servers' stop may take (ending every stream) before we go
# on closing the database. Streams still open then are cut when the process exits; agents
# reconnect either way, and a quick stop is what brings them back soon after a restart.
STOP_SLACK_S = 5.0
# grpc's defaults for calls accepted but not yet taken by the event loop (a soft limit of
# 1,000 and a hard one of 3,000; calls over them are cancelled).
GRPC_PENDING_CALLS, GRPC_PENDING_CALLS_HARD = 1000, 3000


def pending_call_options(calls: int) -> list[tuple[str, int]]:
    """Let ``calls`` new calls wait for the event loop at once. In a reconnect storm every
    site dials at the same moment; at grpc's defaults the calls over 3,000 were cancelled,
    each such site retried after a longer backoff, and 10,000 streams took 37 s to open on
    a bare grpc.aio server here instead of 10 s. A waiting call costs a few kilobytes."""
    return [
        ("grpc.server.max_pending_requests", max(GRPC_PENDING_CALLS, calls)),
        ("grpc.server.max_pending_requests_hard_limit", max(GRPC_PENDING_CALLS_HARD, calls)),
    ]


class EventLoopThread:
    """An asyncio event loop on a daemon thread, with sync helpers to run work on it."""

    def __init__(self, name: str = "rpc-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            if self._abandoned:
                return
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)

    def abandon(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and leave its tasks as they are, for a process about to exit:
        ending ten thousand of them one by one would take seconds, and the exit ends them
        all at once."""
        self._abandoned = True
        self.stop(timeout_s)


class AioServer:
    """One grpc.aio server on an ``EventLoopThread``: mounts behind the guard, standard
    health and reflection (v1 and v1alpha). Bind, start and stop it from sync code."""

    def __init__(
        self,
        loop: EventLoopThread,
        mounts: Sequence[ServiceMount],
        authenticate: Authenticator,
        classes: Iterable[CallClass],
        *,
        max_message_bytes: int,
        observer: RpcObserver | None = None,
        known_elsewhere: Sequence[ServiceMount] = (),
        restrict_reflection: bool = False,
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        """``known_elsewhere``: mounts served by another server; their methods are answered
        with the permission error (e.g. "needs a client certificate") instead of
        UNIMPLEMENTED. ``restrict_reflection``: reflection describes only what this server
        serves (for the anonymous port)."""
        self._loop = loop
        self.classes = CallClasses(list(classes))
        table = PermissionTable()
        method_classes: dict[str, str] = {}
        for mount in [*mounts, *known_elsewhere]:
            for method, roles in mount.permissions().items():
                table.allow(method, roles)
        for mount in mounts:
            for method, name in mount.call_classes.items():
                if name not in self.classes.spec:
                    raise errors.FailedPrecondition(f"{mount.name}.{method} names an unknown call class {name!r}")
                method_classes[f"/{mount.name}/{method}"] = name
        for method in ("Check", "Watch", "List"):
            table.allow(f"/{HEALTH_SERVICE}/{method}", EVERYONE)
        for name in REFLECTION_SERVICES:
            table.allow(f"/{name}/ServerReflectionInfo", EVERYONE)
        guard = AioGuard(authenticate, table, self.classes, observer, method_classes, bool(known_elsewhere))
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            # As many as the call classes would take at once may arrive at once.
            *pending_call_options(sum(spec.limit for spec in self.classes.spec.values())),
            *KEEPALIVE_SERVER_OPTIONS,
        ]
        self._server, self.health = loop.run(
            self._build(mounts, guard, options, restrict_reflection, max_concurrent_rpcs)
        )

    @staticmethod
    async def _build(mounts, guard, options, restrict_reflection, max_concurrent_rpcs):
        server = grpc.aio.server(interceptors=[guard], options=options, maximum_concurrent_rpcs=max_concurrent_rpcs)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        for mount in mounts:
            mount.register(server)
        names = [m.name for m in mounts]
        for name in ["", *names]:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        served = [*names, HEALTH_SERVICE]
        pool = None
        if restrict_reflection:
            from silolink.rpc.reflection import restricted_pool

            pool = restricted_pool(served)
        else:
            pool = descriptor_pool.Default()
        add_reflection(server, served, pool)
        return server, health

    def bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Listen on ``address`` (``host:port``, port 0 for any); return the port."""

        async def add() -> int:
            try:
                if credentials is None:
                    return self._server.add_insecure_port(address)
                return self._server.add_secure_port(address, credentials)
            except RuntimeError as e:
                raise errors.Unavailable(f"cannot listen on {address}: {e}") from None

        return check_bound(address, self._loop.run(add()))

    def start(self) -> None:
        self._loop.run(self._server.start())

    def set_not_serving(self) -> None:
        """Tell health checkers we are going away (before a graceful stop)."""
        self._loop.run(self.health.enter_graceful_shutdown())

    def stop(self, grace_s: float | None) -> None:
        """Stop taking calls, give those in flight ``grace_s``, then end them (see stop_servers)."""
        stop_servers([self], grace_s)

    def wait(self) -> None:
        self._loop.run(self._server.wait_for_termination())

    def stats(self) -> Mapping[str, Mapping[str, int]]:
        """Calls in flight and refused so far, by class (for metrics)."""
        return {"active": dict(self.classes.active), "refused": dict(self.classes.refused)}


def drain_servers(servers: Sequence[AioServer], grace_s: float, streams: str) -> None:
    """For a process about to exit: stop ``servers`` listening and taking calls, and give
    the calls in flight ``grace_s`` to finish, except those of the ``streams`` class, which
    only end when the process does (a client sees its connection close and reconnects).

    Ending long-lived streams one by one is grpc.aio's slowest path: about a millisecond
    each on the event loop (a bare grpc.aio server holding 10,000 streams took 13 s to
    cancel them here), and a restart waits for all of it."""
    if not servers:
        return

    def busy() -> int:
        return sum(n for server in servers for name, n in server.classes.active.items() if name != streams)

    async def drain() -> int:
        loop = asyncio.get_running_loop()
        for server in servers:  # stop listening at once; the long grace is never reached
            loop.create_task(server._server.stop(grace_s + 3600))
        deadline = loop.time() + grace_s
        while busy() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return busy()

    try:
        left = servers[0]._loop.run(drain(), timeout_s=grace_s + STOP_SLACK_S)
    except Exception:  # noqa: BLE001 - log and go on shutting down
        left = -1
    if left:
        log.warning("calls still in flight after the %.0f s grace end with the process", grace_s)


def stop_servers(servers: Sequence[AioServer], grace_s: float | None) -> None:
    """Stop ``servers`` (on one loop) together: stop taking calls, give those in flight
    ``grace_s``, then end them. Never raises: a loop busy ending ten thousand streams may
    take a while, and the caller still has to close its database."""
    if not servers:
        return
    limit_s = (grace_s or 0) + STOP_SLACK_S

    async def stop_all() -> None:
        await asyncio.gather(*(server._server.stop(grace_s) for server in servers))

    try:
        servers[0]._loop.run(stop_all(), timeout_s=limit_s)
    except Exception:  # noqa: BLE001 - log and go on shutting down
        log.warning("the servers did not stop within %.0f s; going on (open streams end with the process)", limit_s)
    finally:
        for server in servers:
            server.classes.shutdown()
