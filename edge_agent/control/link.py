"""The agent's link to the coordinator: one long-lived mTLS control stream, re-opened with
backoff whenever it breaks.

On each session the agent sends Hello, then a heartbeat every interval the coordinator
asked for, and runs the commands it receives on a small pool, answering on the same
stream. Before each connection, and at each heartbeat, it renews its certificate once
less than ``renew_remaining_fraction`` of its lifetime is left.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from silolink import errors, pki
from silolink.config import AgentConfig
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.gen.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from silolink.rpc.channels import mtls_channel
from silolink.rpc.status import from_rpc_error

from ..identity import load_identity, save_identity
from ..layout import AgentLayout
from .backoff import Backoff
from .commands import CommandDispatcher

log = logging.getLogger(__name__)
# A coordinator's reconnect spread is honoured up to this many seconds (it could be wrong).
MAX_RECONNECT_SPREAD_S = 120.0


@dataclass
class LinkStatus:
    """What the local API reports about the link; written by the link thread only."""

    state: str = "connecting"  # connecting | connected | revoked | stopping
    last_error: str = ""
    last_contact: float | None = None
    session_id: str = ""
    connected_once: threading.Event = field(default_factory=threading.Event)


class _SessionEnded(Exception):
    """The current session should end so the next one starts fresh (e.g. after renewal)."""


class ControlLink:
    def __init__(
        self,
        layout: AgentLayout,
        config: AgentConfig,
        dispatcher: CommandDispatcher,
        report: Callable[[], object],
        command_workers: int = 4,
    ) -> None:
        self._layout = layout
        self._config = config
        self._dispatcher = dispatcher
        self._report = report
        self.status = LinkStatus()
        self._stop = threading.Event()
        self._renewed = threading.Event()  # set when a renewal ends the session on purpose
        self._call: grpc.Future | None = None
        # The coordinator's advice from the last Welcome: spread reconnects over this long.
        self._reconnect_spread_s = 0.0
        self._lock = threading.Lock()
        self._commands = ThreadPoolExecutor(command_workers, thread_name_prefix="command")
        self._thread = threading.Thread(target=self._run, name="control-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.status.state = "stopping"
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._thread.join(timeout_s)
        self._commands.shutdown(wait=False, cancel_futures=True)

    # -- the reconnect loop --------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(self._config.reconnect_initial_s, self._config.reconnect_max_s)
        while not self._stop.is_set():
            was_connected = False
            try:
                self._session(backoff)
                continue  # ended on purpose (renewal, replaced): reconnect now
            except errors.SiloError as e:
                was_connected = self.status.state == "connected"
                self._note_failure(e)
            except Exception as e:  # noqa: BLE001 - the link must outlive any one failure
                log.exception("control session failed unexpectedly")
                self._note_failure(errors.Internal(str(e)))
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            if was_connected and self._reconnect_spread_s > 0:
                # A stream that was up just broke, most likely for the whole fleet at once
                # (a coordinator restart): come back at a random point of the spread the
                # coordinator asked for, not all in the same second.
                delay = max(delay, random.uniform(0, self._reconnect_spread_s))
            if self.status.state == "revoked":
                delay = self._config.reconnect_max_s
            log.info("reconnecting to %s in %.1f s", self._config.coordinator, delay)
            self._stop.wait(delay)

    def _note_failure(self, error: errors.SiloError) -> None:
        if self._stop.is_set():
            return
        self.status.last_error = error.message
        if error.code is errors.Code.PERMISSION_DENIED and "revoked" in error.message:
            if self.status.state != "revoked":
                log.error("the coordinator revoked this site: %s; the site must be enrolled again", error.message)
            self.status.state = "revoked"
        else:
            self.status.state = "connecting"
            log.warning("control link down: %s", error.message)

    # -- one session ---------------------------------------------------------------------
    def _session(self, backoff: Backoff) -> None:
        identity = load_identity(self._layout)
        if identity.remaining_fraction() <= 0:
            raise errors.FailedPrecondition(
                f"the site certificate expired at {identity.expires_at.isoformat()}; enroll the site again"
            )
        channel = mtls_channel(self._config.coordinator, identity.credentials, self._config.max_message_bytes)
        outbound: queue.Queue[control_pb2.ConnectRequest | None] = queue.Queue()
        outbound.put(control_pb2.ConnectRequest(hello=control_pb2.Hello(resources=self._report())))
        session_over = threading.Event()
        try:
            if identity.remaining_fraction() < self._config.renew_remaining_fraction:
                self._renew(channel)
                raise _SessionEnded
            call = control_pb2_grpc.ControlServiceStub(channel).Connect(_drain(outbound))
            with self._lock:
                self._call = call
            if self._stop.is_set():
                call.cancel()
            interval = [self._config.reconnect_max_s]
            heartbeats = threading.Thread(
                target=self._heartbeat, args=(channel, call, outbound, session_over, interval), daemon=True
            )
            for response in call:
                self.status.last_contact = time.time()
                kind = response.WhichOneof("kind")
                if kind == "welcome":
                    interval[0] = response.welcome.heartbeat_interval_s or interval[0]
                    self._connected(response.welcome, backoff)
                    heartbeats.start()
                elif kind == "command":
                    self._commands.submit(self._run_command, response.command, outbound)
        except _SessionEnded:
            return
        except grpc.RpcError as e:
            if self._stop.is_set() or self._renewed.is_set():
                self._renewed.clear()
                return
            raise from_rpc_error(e, peer=f"the coordinator at {self._config.coordinator}") from None
        finally:
            session_over.set()
            outbound.put(None)
            with self._lock:
                self._call = None
            channel.close()
        if not self._stop.is_set():
            raise errors.Unavailable("the coordinator closed the control stream")

    def _connected(self, welcome: control_pb2.Welcome, backoff: Backoff) -> None:
        self._reconnect_spread_s = max(0.0, min(welcome.reconnect_spread_s, MAX_RECONNECT_SPREAD_S))
        self.status.state = "connected"
        self.status.last_error = ""
        self.status.session_id = welcome.session_id
        self.status.connected_once.set()
        backoff.reset()
        log.info("connected to %s as %s (session %s)", self._config.coordinator, welcome.site, welcome.session_id)

    def _heartbeat(self, channel, call, outbound, session_over: threading.Event, interval: list[float]) -> None:
        while not session_over.wait(interval[0]):
            heartbeat = control_pb2.Heartbeat(resources=self._report())
            heartbeat.sent_at.GetCurrentTime()
            outbound.put(control_pb2.ConnectRequest(heartbeat=heartbeat))
            try:
                if load_identity(self._layout).remaining_fraction() < self._config.renew_remaining_fraction:
                    self._renew(channel)
                    self._renewed.set()
                    call.cancel()  # reconnect with the new certificate
                    return
            except errors.SiloError as e:
                log.warning("certificate renewal failed, will retry: %s", e.message)

    def _renew(self, channel: grpc.Channel) -> None:
        key = pki.generate_key()
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        try:
            reply = stub.RenewCertificate(
                enrollment_pb2.RenewCertificateRequest(csr_pem=pki.make_csr(key, "silolink-agent")), timeout=15
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self._config.coordinator}") from None
        save_identity(self._layout, key, reply.certificate_pem)
        log.info("site certificate renewed; now valid until %s", load_identity(self._layout).expires_at.isoformat())

    def _run_command(self, command: control_pb2.Command, outbound: queue.Queue) -> None:
        outbound.put(control_pb2.ConnectRequest(result=self._dispatcher.dispatch(command)))


def _drain(outbound: queue.Queue) -> Iterator[control_pb2.ConnectRequest]:
    while True:
        item = outbound.get()
        if item is None:
            return
        yield item
