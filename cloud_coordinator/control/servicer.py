"""ControlService: each agent's stream, served by coroutines on the event loop.

One coroutine per stream writes (the Welcome, then commands the moment they are queued);
one task reads (heartbeats into memory, command results to their futures). No thread and
no polling per site: an idle site costs a few kilobytes and no CPU. One sweeper task
closes streams that went silent, judged from memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

import grpc

from silolink import errors
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.identity import Role
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from ..sites.presence import Presence
from .admission import AdmissionRate
from .gc_policy import StreamFreezer
from .hub import ControlHub, Session

log = logging.getLogger(__name__)
# The sweeper skips a round after the loop itself fell this far behind: sites' messages
# may have waited unread, and a busy coordinator must not drop healthy sites.
LAG_TOLERANCE_S = 1.0
# The reconnect spread suggested to agents, at most (seconds).
MAX_RECONNECT_SPREAD_S = 45.0


class ControlServicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(
        self,
        hub: ControlHub,
        presence: Presence,
        heartbeat_interval_s: float,
        stale_after_s: float,
        admission: AdmissionRate,
        clock: Callable[[], float] = time.time,
        heartbeat_delay: Callable[[float], None] | None = None,
        freezer: StreamFreezer | None = None,
    ):
        """``heartbeat_delay(seconds)`` receives each heartbeat's delay from the agent's
        send (its own timestamp) to the coordinator's record; ``freezer`` keeps garbage
        collections short once many streams have settled (gc_policy.py)."""
        self._freezer = freezer
        self._closing = False
        self._hub = hub
        self._presence = presence
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stale_after_s = stale_after_s
        self._admission = admission
        self._clock = clock
        self._heartbeat_delay = heartbeat_delay
        self._sweeper: asyncio.Task | None = None
        self.dropped_stale = 0

    async def Connect(
        self, request_iterator: AsyncIterator[control_pb2.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.ConnectResponse]:
        site = current_identity().name
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("hello"):
            raise errors.InvalidArgument("a control stream must start with Hello")
        await self._admission.admit()
        if self._closing:  # a stream opened now would only hold the stop up for its grace
            raise errors.ShuttingDown("the coordinator is shutting down; reconnect later")
        self._ensure_sweeper()
        self._presence.record(site, first.hello.resources)
        session = self._hub.open(site)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        session.on_wake(lambda: loop.call_soon_threadsafe(wake.set))
        reader = asyncio.create_task(self._read(session, request_iterator, wake))
        try:
            yield control_pb2.ConnectResponse(
                welcome=control_pb2.Welcome(
                    site=site,
                    heartbeat_interval_s=self._heartbeat_interval_s,
                    session_id=session.session_id,
                    reconnect_spread_s=self._reconnect_spread_s(),
                )
            )
            while True:
                await wake.wait()
                wake.clear()
                for command in session.take_commands():
                    yield control_pb2.ConnectResponse(command=command)
                if session.closed.is_set():
                    break
            if session.close_reason is not None:
                raise session.close_reason
        finally:
            reader.cancel()
            self._hub.close(session)

    async def _read(
        self, session: Session, requests: AsyncIterator[control_pb2.ConnectRequest], wake: asyncio.Event
    ) -> None:
        try:
            async for message in requests:
                session.touch()
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    heartbeat = message.heartbeat
                    contact = self._presence.record(session.site, heartbeat.resources)
                    if self._heartbeat_delay is not None and heartbeat.HasField("sent_at"):
                        sent = heartbeat.sent_at.seconds + heartbeat.sent_at.nanos / 1e9
                        self._heartbeat_delay(max(0.0, contact.at - sent))
                elif kind == "result":
                    session.resolve(message.result)
                else:
                    raise errors.InvalidArgument(f"a control stream carries heartbeats and results, not {kind}")
        except asyncio.CancelledError:
            raise
        except errors.SiloError as e:
            log.warning("control stream of %s: %s", session.site, e.message)
            self._hub.close(session, e)
        except Exception:  # noqa: BLE001 - the stream ended; never let it kill the coordinator
            log.debug("control stream of %s ended", session.site, exc_info=True)
        finally:
            self._hub.close(session)
            wake.set()

    def _reconnect_spread_s(self) -> float:
        """How long agents should spread their reconnects over after losing this stream, so
        a restarted coordinator sees them arrive at about the rate it admits them."""
        return min(MAX_RECONNECT_SPREAD_S, self._hub.connected_count() / self._admission.rate_per_s)

    # -- staleness -----------------------------------------------------------------------
    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        period = max(0.05, min(5.0, self._stale_after_s / 4))
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + period
            await asyncio.sleep(period + random.uniform(0, period / 10))
            lag = loop.time() - expected - period / 10
            if lag > LAG_TOLERANCE_S:
                log.warning("the coordinator fell %.1f s behind; staleness checks wait a round", lag)
                continue
            self.sweep()
            if self._freezer is not None and not self._closing:
                self._freezer.maybe_freeze()  # on the loop: a collection stops it anyway

    def sweep(self) -> int:
        """Close the sessions silent for longer than ``stale_after_s``; how many."""
        cutoff = self._clock() - self._stale_after_s
        dropped = 0
        for session in self._hub.sessions():
            if session.last_seen < cutoff:
                self._hub.close(session, errors.Unavailable(f"no heartbeat for {self._stale_after_s:.0f} s"))
                dropped += 1
        if dropped:
            self.dropped_stale += dropped
            log.warning("closed %d silent control stream(s) (no heartbeat for %.0f s)", dropped, self._stale_after_s)
        return dropped

    def refuse_new_streams(self) -> None:
        """From now on a new stream is told to come back later (the coordinator is stopping)."""
        self._closing = True

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.get_loop().call_soon_threadsafe(self._sweeper.cancel)


def mount(servicer: ControlServicer) -> ServiceMount:
    return ServiceMount(
        name=control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name,
        register=lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(servicer, server),
        rules={"Connect": {Role.AGENT}},
        call_classes={"Connect": "control"},
    )
