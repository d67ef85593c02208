"""Classes of calls with limits of their own: no number of agents or anonymous callers can
take the place operators need, and control streams hold no thread each."""

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from silolink import pki
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.gen.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from silolink.rpc.channels import Credentials, tls_channel
from tests import support


def provision(coordinator, count: int, prefix: str = "site") -> list[tuple[str, Credentials]]:
    """Enroll ``count`` sites through the coordinator's own site service (real CSRs and
    certificates, no agent daemons): the credentials each would dial with."""
    ca = pki.cert_to_pem(coordinator.ca.cert)
    sites = []
    for i in range(count):
        name = f"{prefix}-{i:04d}"
        issued = coordinator.sites.add_site(name, "factory", {})
        key = pki.generate_key()
        enrolled = coordinator.sites.enroll(issued.token, pki.make_csr(key, name), "test")
        sites.append((name, Credentials(ca, enrolled.certificate_pem, pki.key_to_pem(key))))
    return sites


class StreamHolder:
    """Control streams held open by grpc.aio clients on a loop of their own (one TLS
    connection per site, Hello then silence)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channels: list[grpc.aio.Channel] = []
        self.calls: dict[str, grpc.aio.StreamStreamCall] = {}

    def open(self, sites) -> None:
        asyncio.run_coroutine_threadsafe(self._open_all(sites), self.loop).result(120)

    async def _open_all(self, sites) -> None:
        await asyncio.gather(*(self._open(name, creds) for name, creds in sites))

    async def _open(self, name: str, creds: Credentials) -> None:
        channel = grpc.aio.secure_channel(
            self.address,
            grpc.ssl_channel_credentials(creds.ca_pem, creds.key_pem, creds.cert_pem),
            options=[("grpc.ssl_target_name_override", "localhost")],
        )
        self.channels.append(channel)
        call = control_pb2_grpc.ControlServiceStub(channel).Connect()
        await call.write(control_pb2.ConnectRequest(hello=control_pb2.Hello()))
        reply = await call.read()
        assert reply.HasField("welcome")
        self.calls[name] = call

    def read(self, name: str) -> control_pb2.ConnectResponse:
        return asyncio.run_coroutine_threadsafe(self.calls[name].read(), self.loop).result(10)

    def close(self) -> None:
        async def close_all():
            await asyncio.gather(*(c.close() for c in self.channels))

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def timed_list_sites(coordinator) -> tuple[float, int]:
    with support.operator(coordinator) as client:
        start = time.perf_counter()
        sites = client.list_sites()
        return time.perf_counter() - start, len(sites)


def test_operators_are_answered_with_more_control_streams_open_than_the_old_call_limit(tmp_path):
    # The sync server held a thread and a call slot per stream, 256 of each (64 in tests):
    # stream 257 and every operator call after it got RESOURCE_EXHAUSTED.
    coordinator = support.start_coordinator(tmp_path / "c", stale_after_s=60)
    holder = StreamHolder(coordinator.address)
    try:
        sites = provision(coordinator, 300)
        threads_before = threading.active_count()
        holder.open(sites)
        support.wait_for(lambda: len(coordinator.hub.connected_sites()) == 300, 30, "300 streams")
        assert threading.active_count() < threads_before + 20  # not a thread (or two) per stream
        seconds, listed = timed_list_sites(coordinator)
        assert listed == 300 and seconds < 2.0
        with support.operator(coordinator) as client:
            online = [s for s in client.list_sites() if s["state"] == "online"]
        assert len(online) == 300
        # A command travels down the site's stream as soon as it is queued.
        name = sites[123][0]
        future = coordinator.hub.request(name, ping=control_pb2.PingCommand(payload=b"x"))
        command = holder.read(name).command
        assert command.ping.payload == b"x" and not future.done()
    finally:
        holder.close()
        coordinator.stop(0)


def test_anonymous_streams_beyond_their_limit_do_not_lock_operators_out(coordinator):
    # Before: 72 anonymous health Watch streams on the enrollment port filled the one
    # server's call limit and operators' ListSites failed with RESOURCE_EXHAUSTED.
    channel = tls_channel(coordinator.enroll_address, pki.cert_to_pem(coordinator.ca.cert))
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(72)]
    refused = 0
    try:
        for watch in watches:
            try:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in e.details()
                refused += 1
        limit = coordinator.config.limits.enroll_probe_calls
        assert refused == 72 - limit  # anonymous probes are bounded...
        seconds, _ = timed_list_sites(coordinator)  # ...and operators are still answered
        assert seconds < 2.0
        # Enrollment has a limit of its own too: a new site can still enroll.
        added = support.operator(coordinator).add_site("hospital-z", "hospital", {})
        key = pki.generate_key()
        reply = enrollment_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            enrollment_pb2.EnrollRequest(token=added["token"], csr_pem=pki.make_csr(key, "z")), timeout=10
        )
        assert reply.site == "hospital-z"
    finally:
        for watch in watches:
            watch.cancel()
        channel.close()


def test_the_anonymous_port_refuses_the_rest_of_the_api_with_a_hint(coordinator):
    from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc

    channel = tls_channel(coordinator.enroll_address, pki.cert_to_pem(coordinator.ca.cert))
    with pytest.raises(grpc.RpcError) as info:
        admin_pb2_grpc.AdminServiceStub(channel).ListSites(admin_pb2.ListSitesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "client certificate" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/no.such.Service/Method")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_garbage_on_a_control_stream_ends_that_stream_only(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c", stale_after_s=60)
    holder = StreamHolder(coordinator.address)
    try:
        sites = provision(coordinator, 2)
        holder.open(sites[1:])  # a well-behaved neighbour

        async def garbage():
            name, creds = sites[0]
            channel = grpc.aio.secure_channel(
                coordinator.address,
                grpc.ssl_channel_credentials(creds.ca_pem, creds.key_pem, creds.cert_pem),
                options=[("grpc.ssl_target_name_override", "localhost")],
            )
            call = channel.stream_stream("/silolink.control.v1.ControlService/Connect")()
            await call.write(b"\xff\xff\xff not a protobuf message")
            try:
                await call.read()
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details()
            finally:
                await channel.close()

        code, details = asyncio.run_coroutine_threadsafe(garbage(), holder.loop).result(10)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf message" in details
        assert coordinator.hub.is_connected(sites[1][0])  # the neighbour is untouched
        future = coordinator.hub.request(sites[1][0], ping=control_pb2.PingCommand(payload=b"ok"))
        assert holder.read(sites[1][0]).command.ping.payload == b"ok" and not future.done()
    finally:
        holder.close()
        coordinator.stop(0)
