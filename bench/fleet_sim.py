"""Simulated agents for ``bench.fleet``: many sites in one process, each with its own
certificate and its own TLS connection, speaking the real control protocol with grpc.aio.

    python -m bench.fleet_sim ADDRESS SITES_FILE FIRST COUNT

Each site does what the edge agent's link does, without its daemon: Hello, heartbeats at
the interval the Welcome names (with ``sent_at``), a reconnect after a lost stream spread
over the Welcome's ``reconnect_spread_s`` plus backoff with jitter, and answers to
commands: pings; model orders (manifest signature checked, the file downloaded over
DistributionService and its SHA-256 checked, ``active`` reported, retrying RESOURCE_EXHAUSTED
and UNAVAILABLE); and both rounds of a secure count (real keys, signatures and masks, on
the sparse graph; each site's count is ``100 + index % 7``). One JSON line of counters goes
to stdout every half second; a line ``stop`` on stdin ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import resource
import sys
import time
from pathlib import Path

import grpc
from cryptography import x509

from edge_agent.control.backoff import Backoff
from silolink import errors, manifests, pki
from silolink.analytics import secagg
from silolink.gen.analytics.v1 import analytics_pb2
from silolink.gen.common.v1 import site_pb2
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.gen.registry.v1 import registry_pb2, registry_pb2_grpc

REPORT = site_pb2.ResourceReport(
    cpu_count=4, memory_total_bytes=8 << 30, memory_available_bytes=4 << 30, disk_free_bytes=100 << 30,
    agent_version="sim",
)  # fmt: skip
CHANNEL_OPTIONS = [
    ("grpc.ssl_target_name_override", "localhost"),
    ("grpc.use_local_subchannel_pool", 1),  # one connection per site, never shared
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
TRANSIENT = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
DOWNLOADS_AT_ONCE = 64


class Counters:
    def __init__(self) -> None:
        self.connected = 0
        self.sessions = 0
        self.failed_connects = 0
        self.connect_errors: dict[str, int] = {}  # why connects failed: status code and the start of its details
        self.heartbeats = 0
        self.active = 0
        self.install_failed = 0
        self.retried = 0
        self.setups = 0
        self.masks = 0
        self.refused: dict[str, int] = {}


class Sim:
    def __init__(self, address: str, ca_pem: bytes, sites: list[dict], first: int) -> None:
        self.address = address
        self.ca_pem = ca_pem
        self.ca = x509.load_pem_x509_certificate(ca_pem)
        self.counters = Counters()
        self.downloads = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        self.sites = [SimSite(self, s, first + i) for i, s in enumerate(sites)]
        self.stopping = False

    async def run(self) -> None:
        tasks = [asyncio.create_task(site.run()) for site in self.sites]
        loop = asyncio.get_running_loop()
        reporter = asyncio.create_task(self.report())
        await loop.run_in_executor(None, sys.stdin.readline)
        self.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reporter.cancel()
        self.print()

    async def report(self) -> None:
        while True:
            self.print()
            await asyncio.sleep(0.5)

    def print(self) -> None:
        print(json.dumps({**self.counters.__dict__, "t": time.time()}), flush=True)


class SimSite:
    def __init__(self, sim: Sim, entry: dict, index: int) -> None:
        self.sim = sim
        self.name = entry["name"]
        self.index = index
        self.key = pki.load_key(entry["key_pem"].encode())
        self.cert_pem = entry["cert_pem"].encode()
        self.credentials = grpc.ssl_channel_credentials(sim.ca_pem, entry["key_pem"].encode(), self.cert_pem)
        self.spread_s = 0.0
        self.pending: dict[str, tuple] = {}

    async def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        await asyncio.sleep(random.uniform(0, 0.5))
        while not self.sim.stopping:
            connected = False
            try:
                connected = await self.session(backoff)
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {(e.details() or '')[:200]}"
                self.sim.counters.connect_errors[why] = self.sim.counters.connect_errors.get(why, 0) + 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a simulated site must outlive any one failure
                print(f"site {self.name}: {e!r}", file=sys.stderr)
            if not connected:
                self.sim.counters.failed_connects += 1
            delay = backoff.next_delay()
            if connected and self.spread_s > 0:
                delay = max(delay, random.uniform(0, self.spread_s))
            await asyncio.sleep(delay)

    async def session(self, backoff: Backoff) -> bool:
        counters = self.sim.counters
        async with grpc.aio.secure_channel(self.sim.address, self.credentials, options=CHANNEL_OPTIONS) as channel:
            self.channel = channel
            call = control_pb2_grpc.ControlServiceStub(channel).Connect()
            self.lock = asyncio.Lock()
            await call.write(control_pb2.ConnectRequest(hello=control_pb2.Hello(resources=REPORT)))
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                return False
            self.spread_s = first.welcome.reconnect_spread_s
            backoff.reset()
            counters.connected += 1
            counters.sessions += 1
            beats = asyncio.create_task(self.heartbeats(call, first.welcome.heartbeat_interval_s or 10.0))
            work: set[asyncio.Task] = set()
            try:
                while (response := await call.read()) is not grpc.aio.EOF:
                    if response.HasField("command"):
                        task = asyncio.create_task(self.handle(call, response.command))
                        work.add(task)
                        task.add_done_callback(work.discard)
            finally:
                counters.connected -= 1
                beats.cancel()
                for task in work:
                    task.cancel()
            return True

    async def write(self, call, request: control_pb2.ConnectRequest) -> None:
        async with self.lock:
            await call.write(request)

    async def heartbeats(self, call, interval: float) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            heartbeat = control_pb2.Heartbeat(resources=REPORT)
            heartbeat.sent_at.GetCurrentTime()
            await self.write(call, control_pb2.ConnectRequest(heartbeat=heartbeat))
            self.sim.counters.heartbeats += 1
            await asyncio.sleep(interval)

    async def handle(self, call, command: control_pb2.Command) -> None:
        result = control_pb2.CommandResult(command_id=command.command_id)
        kind = command.WhichOneof("body")
        try:
            if kind == "ping":
                result.ping.payload = command.ping.payload
            elif kind == "install_model":
                result.install_model.state = registry_pb2.ROLLOUT_STATE_PENDING
                asyncio.create_task(self.install(command.install_model))
            elif kind == "analytics_setup":
                result.analytics_setup.CopyFrom(self.setup(command.analytics_setup))
            elif kind == "analytics_mask":
                result.analytics_mask.CopyFrom(self.mask(command.analytics_mask))
            else:
                raise errors.FailedPrecondition(f"the simulated agent does not run {kind}")
        except errors.SiloError as e:
            result = control_pb2.CommandResult(
                command_id=command.command_id, status_code=errors.NUMBERS[e.code], status_message=e.message
            )
            self.sim.counters.refused[kind] = self.sim.counters.refused.get(kind, 0) + 1
        except Exception as e:  # noqa: BLE001 - answered as INTERNAL, as the agent's dispatcher does
            print(f"site {self.name}: {kind} failed: {e!r}", file=sys.stderr)
            result = control_pb2.CommandResult(command_id=command.command_id, status_code=13, status_message=repr(e))
        await self.write(call, control_pb2.ConnectRequest(result=result))

    # -- model orders --------------------------------------------------------------------
    async def install(self, order: registry_pb2.InstallModelCommand) -> None:
        counters = self.sim.counters
        try:
            fields = manifests.verify(order.manifest, order.manifest_signature, order.signer_certificate_pem,
                                      self.sim.ca_pem)  # fmt: skip
        except errors.SiloError as e:
            counters.install_failed += 1
            await self.report(order.rollout_id, registry_pb2.ROLLOUT_STATE_FAILED, e.message)
            return
        stub = registry_pb2_grpc.DistributionServiceStub(self.channel)
        backoff = Backoff(0.5, 10.0)
        async with self.sim.downloads:
            while True:
                digest, size = hashlib.sha256(), 0
                try:
                    request = registry_pb2.DownloadModelRequest(name=order.name, version=order.version)
                    async for chunk in stub.DownloadModel(request, timeout=300):
                        digest.update(chunk.data)
                        size += len(chunk.data)
                    break
                except grpc.aio.AioRpcError as e:
                    if e.code() not in TRANSIENT:
                        counters.install_failed += 1
                        await self.report(order.rollout_id, registry_pb2.ROLLOUT_STATE_FAILED, e.details() or "")
                        return
                    counters.retried += 1
                    await asyncio.sleep(backoff.next_delay())
        if digest.hexdigest() != fields["sha256"] or size != fields["size"]:
            counters.install_failed += 1
            await self.report(order.rollout_id, registry_pb2.ROLLOUT_STATE_FAILED, "sha256 mismatch")
            return
        await self.report(order.rollout_id, registry_pb2.ROLLOUT_STATE_ACTIVE, "")
        counters.active += 1

    async def report(self, rollout_id: str, state: int, reason: str) -> None:
        stub = registry_pb2_grpc.DistributionServiceStub(self.channel)
        backoff = Backoff(0.5, 10.0)
        request = registry_pb2.ReportRolloutStatusRequest(rollout_id=rollout_id, state=state, reason=reason)
        while True:
            try:
                await stub.ReportRolloutStatus(request, timeout=30)
                return
            except grpc.aio.AioRpcError as e:
                if e.code() not in TRANSIENT:
                    return
                self.sim.counters.retried += 1
                await asyncio.sleep(backoff.next_delay())

    # -- a secure count ------------------------------------------------------------------
    def setup(self, command: analytics_pb2.AnalyticsSetupCommand) -> analytics_pb2.AnalyticsSetupResult:
        participants = secagg.Participants.of(command)
        participants.check(self.name, 1_000_000)
        key, public = secagg.new_key()
        signature = secagg.sign(self.key, participants.transcript(command.query_id, command.query, self.name, public))
        self.pending[command.query_id] = (participants, command.query, key, public, [100 + self.index % 7])
        self.sim.counters.setups += 1
        return analytics_pb2.AnalyticsSetupResult(
            public_key=public, signature=signature, certificate_pem=self.cert_pem, vector_length=1
        )

    def mask(self, command: analytics_pb2.AnalyticsMaskCommand) -> analytics_pb2.AnalyticsMaskResult:
        participants, query, key, public, values = self.pending.pop(command.query_id)
        participants.check_peers(self.name, command.peers)
        for peer in command.peers:
            if peer.site == self.name:
                if peer.public_key != public:
                    raise errors.PermissionDenied("the key relayed as this site's own is not the one it sent")
                continue
            participants.verify(peer, self.sim.ca, command.query_id, query)
        self.sim.counters.masks += 1
        masked = secagg.mask(values, key, self.name, command.peers, command.query_id, query)
        return analytics_pb2.AnalyticsMaskResult(masked=masked)


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    address, sites_file, first, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    raise_open_files_limit()
    lines = sites_file.read_text().splitlines()
    header = json.loads(lines[0])
    sites = [json.loads(line) for line in lines[1 + first : 1 + first + count]]
    sim = Sim(address, header["ca_pem"].encode(), sites, first)
    asyncio.run(sim.run())


if __name__ == "__main__":
    main()
