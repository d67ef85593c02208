"""The hub of control sessions: which sites are connected, and commands sent to them.

Each connected agent has one Session, served by a coroutine on the coordinator's event
loop. Other parts of the coordinator (rollouts, training, analytics) run on threads: they
send a Command to a site with ``request`` and get a ``concurrent.futures.Future`` for its
result; the future fails with Unavailable if the site disconnects first. Commands are
pushed to the site's stream the moment they are queued (the session's wake-up is
thread-safe), never polled for.

Futures are resolved, and connect/disconnect listeners called, on threads of the hub's own
in the coordinator (``dispatch`` and ``notify``), never on the event loop: a callback that
writes to the database must not stall ten thousand streams.

Each session's queue is bounded (commands and bytes). A site that stops reading its
stream fills it, and further commands to it fail at once with RESOURCE_EXHAUSTED instead
of piling up in memory. A newer connection from the same site replaces the older one.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from silolink import errors
from silolink.gen.control.v1 import control_pb2

log = logging.getLogger(__name__)

# Commands waiting to be sent or answered on one session, and their bytes.
MAX_OUTSTANDING = 256
MAX_QUEUED_BYTES = 64 * 1024 * 1024

Dispatch = Callable[..., Any]


def _inline(fn: Callable, *args: Any) -> None:
    fn(*args)


class Session:
    """One agent's open control stream."""

    def __init__(self, site: str, clock: Callable[[], float], dispatch: Dispatch = _inline) -> None:
        self.site = site
        self.session_id = uuid.uuid4().hex[:16]
        self.connected_at = clock()
        self.last_seen = self.connected_at
        self._clock = clock
        self._dispatch = dispatch
        self._outbound: collections.deque[control_pb2.Command] = collections.deque()
        self._queued_bytes = 0
        self._pending: dict[str, Future[control_pb2.CommandResult]] = {}
        self._lock = threading.Lock()
        self._wake: Callable[[], None] = lambda: None
        self.closed = threading.Event()
        self.close_reason: errors.SiloError | None = None

    def touch(self) -> None:
        self.last_seen = self._clock()

    def on_wake(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (from any thread) whenever a command is queued or the session closes."""
        self._wake = wake
        wake()

    def take_commands(self) -> list[control_pb2.Command]:
        """Every queued command, oldest first (the sender then writes them)."""
        with self._lock:
            commands = list(self._outbound)
            self._outbound.clear()
            self._queued_bytes = 0
        return commands

    def submit(self, command: control_pb2.Command) -> Future[control_pb2.CommandResult]:
        future: Future[control_pb2.CommandResult] = Future()
        size = command.ByteSize()
        with self._lock:
            if self.closed.is_set():
                raise errors.Unavailable(f"site {self.site} is not connected")
            if len(self._pending) >= MAX_OUTSTANDING or self._queued_bytes + size > MAX_QUEUED_BYTES:
                raise errors.ResourceExhausted(
                    f"site {self.site} has {len(self._pending)} commands outstanding and is not keeping up "
                    "(it may not be reading its control stream); try again later"
                )
            self._pending[command.command_id] = future
            self._outbound.append(command)
            self._queued_bytes += size
        future.add_done_callback(lambda f: f.cancelled() and self._forget(command.command_id))
        self._wake()
        return future

    def _forget(self, command_id: str) -> None:
        with self._lock:
            self._pending.pop(command_id, None)

    def resolve(self, result: control_pb2.CommandResult) -> None:
        with self._lock:
            future = self._pending.pop(result.command_id, None)
        if future is None:
            log.warning("site %s answered unknown command %s", self.site, result.command_id[:64])
        elif result.status_code:
            self._dispatch(_set_exception, future, errors.from_number(result.status_code, result.status_message))
        else:
            self._dispatch(_set_result, future, result)

    def close(self, reason: errors.SiloError | None = None) -> None:
        """End the session; pending commands fail; the stream ends with ``reason`` if given."""
        with self._lock:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            pending, self._pending = self._pending, {}
            self._outbound.clear()
        self._wake()
        failure = reason or errors.Unavailable(f"site {self.site} disconnected")
        for future in pending.values():
            self._dispatch(
                _set_exception, future, errors.Unavailable(f"site {self.site} disconnected: {failure.message}")
            )


def _set_result(future: Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class ControlHub:
    """The registry of open sessions."""

    def __init__(
        self, clock: Callable[[], float] = time.time, dispatch: Dispatch = _inline, notify: Dispatch = _inline
    ) -> None:
        """``dispatch(fn, *args)`` resolves command futures, ``notify(fn, *args)`` calls the
        connect/disconnect listeners (one thread, so in order); both inline by default."""
        self._clock = clock
        self._dispatch = dispatch
        self._notify_with = notify
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, bool], None]] = []

    def on_change(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener(site, connected)`` whenever a site connects or disconnects
        (off the event loop, in order)."""
        self._listeners.append(listener)

    def open(self, site: str) -> Session:
        session = Session(site, self._clock, self._dispatch)
        with self._lock:
            previous = self._sessions.get(site)
            self._sessions[site] = session
        if previous is not None:
            previous.close(errors.Aborted("replaced by a newer connection from the same site"))
        log.debug("site %s connected (session %s)", site, session.session_id)
        self._notify(site, True)
        return session

    def close(self, session: Session, reason: errors.SiloError | None = None) -> None:
        session.close(reason)
        with self._lock:
            current = self._sessions.get(session.site) is session
            if current:
                del self._sessions[session.site]
        if current:
            log.debug("site %s disconnected (session %s)", session.site, session.session_id)
            self._notify(session.site, False)

    def disconnect(self, site: str, reason: errors.SiloError) -> None:
        with self._lock:
            session = self._sessions.get(site)
        if session is not None:
            self.close(session, reason)

    def close_all(self, reason: errors.SiloError) -> None:
        """End every session (the coordinator is stopping). Listeners are not told one site
        at a time: with ten thousand sites that alone cost seconds of the stop."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close(reason)

    def is_connected(self, site: str) -> bool:
        with self._lock:
            return site in self._sessions

    def connected_sites(self) -> list[str]:
        with self._lock:
            return sorted(self._sessions)

    def connected_count(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def request(self, site: str, **body) -> Future[control_pb2.CommandResult]:
        """Send a command (e.g. ``ping=PingCommand(...)``) to ``site``; a Future of its result."""
        with self._lock:
            session = self._sessions.get(site)
        if session is None:
            raise errors.Unavailable(f"site {site} is not connected")
        return session.submit(control_pb2.Command(command_id=uuid.uuid4().hex, **body))

    def _notify(self, site: str, connected: bool) -> None:
        for listener in self._listeners:
            self._notify_with(_call_listener, listener, site, connected)


def _call_listener(listener: Callable[[str, bool], None], site: str, connected: bool) -> None:
    try:
        listener(site, connected)
    except Exception:  # noqa: BLE001 - one listener must not break the hub
        log.exception("control listener failed for %s", site)
