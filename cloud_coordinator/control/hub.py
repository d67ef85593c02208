"""The hub of control sessions: which sites are connected, and commands sent to them.

Each connected agent has one Session. Other parts of the coordinator (rollouts, training,
analytics) send a Command to a site with ``request`` and get a Future for its result; the
future fails with Unavailable if the site disconnects first. A newer connection from the
same site replaces the older one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future

from silolink import errors
from silolink.gen.control.v1 import control_pb2

log = logging.getLogger(__name__)


class Session:
    """One agent's open control stream."""

    def __init__(self, site: str, clock: Callable[[], float]) -> None:
        self.site = site
        self.session_id = uuid.uuid4().hex[:16]
        self.connected_at = clock()
        self.last_seen = self.connected_at
        self._clock = clock
        self._outbound: queue.Queue[control_pb2.Command | None] = queue.Queue()
        self._pending: dict[str, Future[control_pb2.CommandResult]] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.close_reason: errors.SiloError | None = None

    def touch(self) -> None:
        self.last_seen = self._clock()

    def next_command(self, timeout_s: float) -> control_pb2.Command | None:
        """The next command to send, or None after ``timeout_s`` or when closed."""
        try:
            return self._outbound.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def submit(self, command: control_pb2.Command) -> Future[control_pb2.CommandResult]:
        future: Future[control_pb2.CommandResult] = Future()
        with self._lock:
            if self.closed.is_set():
                raise errors.Unavailable(f"site {self.site} is not connected")
            self._pending[command.command_id] = future
        self._outbound.put(command)
        return future

    def resolve(self, result: control_pb2.CommandResult) -> None:
        with self._lock:
            future = self._pending.pop(result.command_id, None)
        if future is None:
            log.warning("site %s answered unknown command %s", self.site, result.command_id)
        elif result.status_code:
            future.set_exception(errors.from_number(result.status_code, result.status_message))
        else:
            future.set_result(result)

    def close(self, reason: errors.SiloError | None = None) -> None:
        """End the session; pending commands fail; the stream ends with ``reason`` if given."""
        with self._lock:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            pending, self._pending = self._pending, {}
        self._outbound.put(None)  # wake the sender
        failure = reason or errors.Unavailable(f"site {self.site} disconnected")
        for future in pending.values():
            future.set_exception(errors.Unavailable(f"site {self.site} disconnected: {failure.message}"))


class ControlHub:
    """The registry of open sessions."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, bool], None]] = []

    def on_change(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener(site, connected)`` whenever a site connects or disconnects."""
        self._listeners.append(listener)

    def open(self, site: str) -> Session:
        session = Session(site, self._clock)
        with self._lock:
            previous = self._sessions.get(site)
            self._sessions[site] = session
        if previous is not None:
            previous.close(errors.Aborted("replaced by a newer connection from the same site"))
        log.info("site %s connected (session %s)", site, session.session_id)
        self._notify(site, True)
        return session

    def close(self, session: Session, reason: errors.SiloError | None = None) -> None:
        session.close(reason)
        with self._lock:
            current = self._sessions.get(session.site) is session
            if current:
                del self._sessions[session.site]
        if current:
            log.info("site %s disconnected (session %s)", session.site, session.session_id)
            self._notify(session.site, False)

    def disconnect(self, site: str, reason: errors.SiloError) -> None:
        with self._lock:
            session = self._sessions.get(site)
        if session is not None:
            self.close(session, reason)

    def close_all(self, reason: errors.SiloError) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            self.close(session, reason)

    def is_connected(self, site: str) -> bool:
        with self._lock:
            return site in self._sessions

    def connected_sites(self) -> list[str]:
        with self._lock:
            return sorted(self._sessions)

    def request(self, site: str, **body) -> Future[control_pb2.CommandResult]:
        """Send a command (e.g. ``ping=PingCommand(...)``) to ``site``; a Future of its result."""
        with self._lock:
            session = self._sessions.get(site)
        if session is None:
            raise errors.Unavailable(f"site {site} is not connected")
        return session.submit(control_pb2.Command(command_id=uuid.uuid4().hex, **body))

    def _notify(self, site: str, connected: bool) -> None:
        for listener in self._listeners:
            try:
                listener(site, connected)
            except Exception:  # noqa: BLE001 - one listener must not break the hub
                log.exception("control listener failed for %s", site)
