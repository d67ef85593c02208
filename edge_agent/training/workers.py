"""Each job's ClientApp runs in a worker process of its own, started on the job's first
message and kept for the job's life.

Why a process: a user app that raises, calls ``sys.exit``, crashes the interpreter, leaks
memory or never returns must not take the agent down, and two apps (or two versions of one)
must not share ``sys.modules``. Why one per job, kept: Flower's ``Context`` (and the
``context.state`` that SecAgg+'s mod keeps between its stages) lives for the whole run.

Workers are forked from a fork server (``multiprocessing``'s ``forkserver`` start method)
that has Flower and numpy imported already, so a job's first message pays a fork, not a
second of imports; the agent's own process, with its gRPC threads, is never forked. Its
environment is cut to a short allow-list (no secret the agent was given through its
environment), and it is handed no path of the site's: while an app handles a message it
asks for its job's rows over the pipe, and the agent answers from
``data_service.DataService``, which applies the site's policy. A worker
ends when its job has sent nothing for ``idle_s``, when a message overruns its timeout
(its state is then unknown), when it dies, or when the agent stops.

As with any use of ``multiprocessing``, a program that embeds the agent (rather than running
``edge-agent``) must guard its entry point with ``if __name__ == "__main__":``: a worker
imports the program's main module on start.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from silolink import errors

from .data_service import DataGrant, DataService

log = logging.getLogger(__name__)
# Imported once in the fork server, so workers start with them: Flower (through the worker
# module) and the data helper most apps read the site's data with.
PRELOAD = ["edge_agent.training.worker", "edge_agent.apps.data", "edge_agent.catalog.reading"]
LOAD_TIMEOUT_S = 60.0  # importing an app (torch, say) can take a while on a busy machine
STOP_GRACE_S = 2.0
NO_DATA = b"E" + json.dumps({"code": "FAILED_PRECONDITION", "message": "this job was given no dataset"}).encode()

_context_lock = threading.Lock()
_context = None


def _mp_context():
    """The fork-server context, preloading Flower (set once per process, before it starts)."""
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
        return _context


def prewarm() -> None:
    """Start the fork server now, so the first job's first message pays a fork, not the
    second or so the fork server takes to import Flower (run on a thread of its own). One
    process that does nothing is forked from it, so "ready" means its imports are done."""
    started = time.monotonic()
    ctx = _mp_context()
    try:
        probe = ctx.Process(target=_nothing, name="clientapp-prewarm", daemon=True)
        probe.start()
        probe.join(LOAD_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - the first job starts it instead, and reports any failure
        log.warning("could not start the ClientApp fork server ahead of time", exc_info=True)
        return
    log.info("ClientApp fork server ready in %.2f s", time.monotonic() - started)


def _nothing() -> None:
    """The process ``prewarm`` forks to know the fork server is ready."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a job's worker runs, and with which Flower Context."""

    label: str  # "NAME:VERSION" or "NAME", for messages and logs
    reference: str  # the ClientApp, "module:attribute"
    app_dir: str | None  # the unpacked bundle, or None for code in the agent's environment
    run_id: int
    node_id: int
    node_config: dict[str, Any] = field(hash=False)
    run_config: dict[str, Any] = field(hash=False)
    # The dataset the app may read through the agent; kept here, never sent to the worker.
    data: DataGrant | None = None
    # Environment variables the app keeps beyond the worker's own few ([training] app_environment).
    environment: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "app_dir": self.app_dir,
            "run_id": self.run_id,
            "node_id": self.node_id,
            "node_config": self.node_config,
            "run_config": self.run_config,
            "environment": list(self.environment),
        }


class AppFailed(errors.SiloError):
    """The ClientApp failed: ``public`` is what the coordinator may see, ``detail`` stays here."""

    def __init__(self, public: errors.SiloError, detail: str) -> None:
        super().__init__(public.message)
        self.code = public.code
        self.public = public
        self.detail = detail


class Worker:
    def __init__(self, job_id: str, spec: WorkerSpec) -> None:
        self.job_id = job_id
        self.spec = spec
        self.lock = threading.Lock()  # one message at a time: the Context is not thread-safe
        self.last_used = time.monotonic()
        self._stopped = False
        self._data = DataService(spec.data, spec.label) if spec.data else None
        ctx = _mp_context()
        from . import worker

        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker.serve, args=(child, spec.as_dict()), name=f"clientapp-{job_id}", daemon=True
        )
        self.process.start()
        child.close()
        try:
            frame = self._receive(LOAD_TIMEOUT_S, "loading")
        except BaseException:
            self.stop()
            raise
        if frame[:1] != b"R":
            self.stop()
            raise self._failure(frame[1:], "loading", errors.FailedPrecondition)
        log.info("job %s: ClientApp %s started in process %s", job_id, spec.label, self.process.pid)

    @property
    def alive(self) -> bool:
        return not self._stopped and self.process.is_alive()

    def run(self, message: bytes, timeout_s: float) -> bytes:
        """The app's reply to one serialized Flower message."""
        with self.lock:
            self.last_used = time.monotonic()
            try:
                self._conn.send_bytes(message)
            except (OSError, ValueError):
                raise self._exited("receiving a message") from None
            try:
                frame = self._receive(timeout_s, "handling a message")
            finally:
                if self._data is not None:
                    self._data.end_message()
            self.last_used = time.monotonic()
        if frame[:1] == b"R":
            return frame[1:]
        raise self._failure(frame[1:], "handling a message", errors.Internal)

    def stop(self) -> None:
        """End the process (terminate, then kill); safe to call again."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._conn.close()
        except OSError:
            pass
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_GRACE_S)
            if self.process.is_alive():
                self.process.kill()
        self.process.join(STOP_GRACE_S)
        if hasattr(self.process, "close"):
            try:
                self.process.close()
            except ValueError:
                pass

    def _receive(self, timeout_s: float, doing: str) -> bytes:
        """The worker's answer (an ``R`` or ``E`` frame), serving its data requests (``Q``
        frames) meanwhile; ``timeout_s`` bounds the whole."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = self._conn.poll(max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):
                raise self._exited(doing) from None
            if not ready:
                self.stop()
                raise errors.DeadlineExceeded(
                    f"app {self.spec.label} did not finish {doing} within {timeout_s:.0f} s; the site stopped it"
                )
            try:
                frame = self._conn.recv_bytes()
            except (EOFError, OSError):
                raise self._exited(doing) from None
            if frame[:1] != b"Q":
                return frame
            answer = self._data.answer(frame[1:]) if self._data else NO_DATA
            try:
                self._conn.send_bytes(answer)
            except (OSError, ValueError):
                raise self._exited(doing) from None

    def _exited(self, doing: str) -> errors.SiloError:
        if self._stopped:  # ended from outside while a message was in flight
            return errors.Cancelled(
                f"app {self.spec.label}'s process was stopped while {doing} (the job ended, or the agent is stopping)"
            )
        try:
            self.process.join(STOP_GRACE_S)
            code = self.process.exitcode
        except ValueError:  # closed by a stop that raced this
            code = None
        ref = uuid.uuid4().hex[:12]
        log.error("job %s: the worker process of app %s exited with code %s while %s (ref %s)",
                  self.job_id, self.spec.label, code, doing, ref)  # fmt: skip
        return errors.Internal(
            f"app {self.spec.label}'s process exited (code {code}) while {doing}; "
            f"details in the site's agent log (ref {ref})"
        )

    def _failure(self, payload: bytes, doing: str, default: type[errors.SiloError]) -> AppFailed:
        report = json.loads(payload)
        if report.get("message"):  # silolink's own or DatasetError: names only, safe to pass on
            code = errors.Code(report.get("code") or "FAILED_PRECONDITION")
            public = errors.BY_CODE[code](f"app {self.spec.label}: {report['message']}")
            return AppFailed(public, report.get("detail", ""))
        ref = uuid.uuid4().hex[:12]
        log.error("job %s: app %s failed %s (ref %s):\n%s", self.job_id, self.spec.label, doing, ref,
                  report.get("detail", ""))  # fmt: skip
        public = default(
            f"app {self.spec.label} failed{' to load' if doing == 'loading' else ''} ({report['type']}); "
            f"details in the site's agent log (ref {ref})"
        )
        return AppFailed(public, "")


class WorkerPool:
    """The running jobs' workers, at most ``max_workers``, each ended after ``idle_s`` unused."""

    def __init__(self, max_workers: int, idle_s: float) -> None:
        self.max_workers = max_workers
        self.idle_s = idle_s
        self._workers: dict[str, Worker] = {}
        self._starting: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="clientapp-reaper", daemon=True)
        self._reaper.start()

    def run(self, job_id: str, spec: WorkerSpec, message: bytes, timeout_s: float) -> bytes:
        worker = self._worker(job_id, spec)
        try:
            return worker.run(message, timeout_s)
        except AppFailed:
            raise  # the app raised: its process is fine and keeps the job's Context
        except errors.SiloError:
            self.end(job_id, worker)  # timed out or died: its state is gone
            raise

    def prepare(self, job_id: str, spec: WorkerSpec) -> None:
        """Start the job's worker ahead of its first message (which then finds it running, or
        waits for the start under way)."""
        self._worker(job_id, spec)

    def end(self, job_id: str, worker: Worker | None = None) -> None:
        """Stop the job's worker (only ``worker``, when given and still the job's)."""
        with self._lock:
            current = self._workers.get(job_id)
            if current is None or (worker is not None and current is not worker):
                return
            del self._workers[job_id]
        current.stop()
        log.info("job %s: ClientApp %s stopped", job_id, current.spec.label)

    def jobs(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    def stop(self) -> None:
        self._stopped.set()
        for job_id in self.jobs():
            self.end(job_id)
        self._reaper.join(STOP_GRACE_S)

    def _worker(self, job_id: str, spec: WorkerSpec) -> Worker:
        while True:
            with self._lock:
                starting = self._starting.setdefault(job_id, threading.Lock())
            with starting:  # one start per job, even if two of its messages arrive together
                with self._lock:
                    if self._starting.get(job_id) is not starting:
                        continue  # the reaper dropped this lock meanwhile: take the current one
                    worker = self._workers.get(job_id)
                return self._current_or_new(job_id, spec, worker)

    def _current_or_new(self, job_id: str, spec: WorkerSpec, worker: Worker | None) -> Worker:
        """Called holding the job's start lock."""
        if worker is not None and worker.spec == spec and worker.alive:
            return worker
        if worker is not None:  # another app for the job, or dead: start afresh
            self.end(job_id, worker)
        self._make_room()
        if self._stopped.is_set():
            raise errors.Unavailable("the agent is stopping")
        worker = Worker(job_id, spec)
        with self._lock:
            self._workers[job_id] = worker
        return worker

    def _make_room(self) -> None:
        with self._lock:
            if len(self._workers) < self.max_workers:
                return
            idle = [(w.last_used, j) for j, w in self._workers.items() if not w.lock.locked()]
        if not idle:
            raise errors.ResourceExhausted(
                f"this site runs {self.max_workers} ClientApps already ([training] max_workers); try again later"
            )
        self.end(min(idle)[1])

    def _reap(self) -> None:
        while not self._stopped.wait(min(5.0, self.idle_s / 4)):
            now = time.monotonic()
            with self._lock:
                stale = [j for j, w in self._workers.items() if now - w.last_used > self.idle_s and not w.lock.locked()]
            for job_id in stale:
                log.info("job %s: no message for %.0f s", job_id, self.idle_s)
                self.end(job_id)
            with self._lock:  # forget the start locks of jobs that have no worker and no start under way
                for job_id in [j for j, lock in self._starting.items() if j not in self._workers and not lock.locked()]:
                    del self._starting[job_id]
