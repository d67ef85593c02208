"""Model orders at the site: check the signature, download, verify, install, activate.

An order arrives on the control stream. Its manifest's signature is checked at once (a
forged or altered order is refused before anything is written), then one background
thread works through orders one at a time, so a long download never holds the command
pool. A download goes to a partial file and resumes from the last byte written after a
broken connection or a restart. A busy or unreachable coordinator (RESOURCE_EXHAUSTED,
UNAVAILABLE, ...) is waited out with backoff for as long as it takes: only a final error
(a refusal, a wrong file) fails an order. Progress reports that cannot be delivered are
retried the same way, the latest state of each order first. The file's SHA-256 and size must
match the signed manifest before it is installed; on any failure the partial and staged
files are deleted and the model store is not touched, so the site keeps serving the
version it had. With ``[registry] require_approval``, a verified model waits in the
staging folder until ``edge-agent models approve NAME:VERSION``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from silolink import errors, manifests
from silolink.config import AgentConfig
from silolink.gen.registry.v1 import registry_pb2 as pb

from ..control.backoff import Backoff
from ..layout import AgentLayout
from ..models.store import ModelStore
from .orders import OPEN_STATES, Order, OrderStore
from .sink import PartialFile

log = logging.getLogger(__name__)
APPROVAL_POLL_S = 0.25
PROGRESS_EVERY_S = 1.0
# Failures a retry can cure; anything else (refused, not found) ends the order.
TRANSIENT = (errors.Unavailable, errors.DeadlineExceeded, errors.Aborted, errors.ResourceExhausted)


class _Truncated(errors.Unavailable):
    """The coordinator's stream ended early or out of step: retried, but only so often."""


STATE_TO_PROTO = {
    s: pb.RolloutState.Value(f"ROLLOUT_STATE_{s.upper()}")
    for s in ("pending", "downloading", "verified", "awaiting_approval", "active", "failed", "superseded")
}

ClientFactory = Callable[[], object]


def registry_dirs(layout: AgentLayout) -> tuple[Path, Path]:
    """(partial downloads, verified files awaiting install) under the data directory."""
    return layout.root / "registry" / "partial", layout.root / "registry" / "staged"


class Installer:
    def __init__(self, layout: AgentLayout, config: AgentConfig, models: ModelStore, client_factory: ClientFactory):
        self._layout = layout
        self._config = config.registry
        self._models = models
        self._client_factory = client_factory
        self.orders = OrderStore.open(layout.state_db)
        self.partial_dir, self.staged_dir = registry_dirs(layout)
        self._queue: queue.Queue[str] = queue.Queue()
        # Reports the coordinator has not taken yet: rollout id -> (state, reason, bytes),
        # retried with backoff from the worker (the latest state replaces older ones).
        self._unreported: dict[str, tuple[str, str, int]] = {}
        self._report_backoff = Backoff(self._config.retry_initial_s, self._config.retry_max_s)
        self._next_report_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-installer", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        for order in self.orders.where(f"state in ({','.join('?' * len(OPEN_STATES))})", list(OPEN_STATES)):
            self._queue.put(order.rollout_id)  # cut short by a restart: resume
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    # -- the command handler (runs on the link's command pool; returns at once) ----------
    def handle(self, command: pb.InstallModelCommand) -> pb.InstallModelResult:
        existing = self.orders.get(command.rollout_id)
        if existing is not None:  # re-sent after a reconnect: say where it stands
            return pb.InstallModelResult(state=STATE_TO_PROTO[existing.state], reason=existing.reason)
        fields = manifests.verify(
            command.manifest, command.manifest_signature, command.signer_certificate_pem,
            self._layout.ca_cert.read_bytes(),
        )  # fmt: skip
        if (fields["name"], fields["version"]) != (command.name, command.version):
            raise errors.PermissionDenied(
                f"the order names {command.name}:{command.version} but its signed manifest is for "
                f"{fields['name']}:{fields['version']}; refusing it"
            )
        with self.orders.atomic():
            for old in self.orders.where(
                f"name = ? and state in ({','.join('?' * len(OPEN_STATES))}, 'awaiting_approval')",
                [command.name, *OPEN_STATES],
            ):
                self.orders.update(old.rollout_id, state="superseded", reason="replaced by a newer order")
            self.orders.add(command.rollout_id, command.name, command.version, fields["sha256"], fields["size"])
        log.info("order %s: install %s:%s (%d bytes)", command.rollout_id, command.name, command.version,
                 fields["size"])  # fmt: skip
        self._queue.put(command.rollout_id)
        return pb.InstallModelResult(state=STATE_TO_PROTO["pending"])

    # -- the worker ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rollout_id = self._queue.get(timeout=APPROVAL_POLL_S)
            except queue.Empty:
                rollout_id = None
            try:
                if rollout_id is not None:
                    self._process(rollout_id)
                self._activate_approved()
                self._retry_reports()
            except Exception:  # noqa: BLE001 - the worker must outlive any one order
                log.exception("model installer failed")

    def _process(self, rollout_id: str) -> None:
        order = self.orders.get(rollout_id)
        if order is None or order.state not in OPEN_STATES:
            return
        try:
            if not self._installed(order):
                self._fetch(order)
            if self._stop.is_set():
                return
            order = self.orders.get(rollout_id)
            if order is None or order.state == "superseded":
                self._discard(order)
                return
            if self._config.require_approval and order.approved_at is None:
                self._set(order, "awaiting_approval", "the site requires approval: edge-agent models approve "
                          f"{order.ref}")  # fmt: skip
                return
            self._activate(order)
        except errors.SiloError as e:
            self._fail(order, e.message)
        except Exception:  # noqa: BLE001 - reported as a failed order, details in the log
            ref = uuid.uuid4().hex[:12]
            log.exception("order %s failed (ref %s)", rollout_id, ref)
            self._fail(order, f"the agent failed to install it (ref {ref}); see the agent's log")

    def _activate_approved(self) -> None:
        for order in self.orders.where("state = 'awaiting_approval' and approved_at is not null", []):
            try:
                self._activate(order)
            except errors.SiloError as e:
                self._fail(order, e.message)

    def _installed(self, order: Order) -> bool:
        try:
            record = self._models.get(order.name, order.version)
        except errors.NotFound:
            return False
        if record.sha256 != order.sha256:
            raise errors.AlreadyExists(
                f"{order.ref} is already installed here with different content (sha256 {record.sha256[:12]}); "
                "remove it at the site or roll out under a new version"
            )
        return True

    def _fetch(self, order: Order) -> None:
        """Download into the partial file (resuming), verify, and move it to staging."""
        staged = self.staged_dir / f"{order.sha256}.onnx"
        if staged.exists():
            return  # verified before a restart
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        partial = self.partial_dir / f"{order.sha256}.part"
        if partial.exists() and partial.stat().st_size > order.size_bytes:
            partial.unlink()
        sink = PartialFile(partial)
        backoff = Backoff(self._config.retry_initial_s, self._config.retry_max_s)
        truncations = 0
        try:
            with self._client_factory() as client:  # type: ignore[attr-defined]
                self._set(order, "downloading", "", sink.offset, client)
                while sink.offset < order.size_bytes:
                    try:
                        self._receive(order, client, sink)
                        if self._stop.is_set():
                            return  # resumed at the next start
                        if sink.offset < order.size_bytes:
                            raise _Truncated(f"the stream ended at byte {sink.offset} of {order.size_bytes}")
                    except TRANSIENT as e:
                        if isinstance(e, _Truncated):
                            truncations += 1
                            if truncations > self._config.download_retries:
                                raise errors.FailedPrecondition(
                                    f"the download of {order.ref} broke off {truncations} times, last at byte "
                                    f"{sink.offset} of {order.size_bytes}: {e.message}"
                                ) from None
                        delay = backoff.next_delay()
                        log.info("download of %s paused at byte %d (%s); resuming in %.1f s", order.ref,
                                 sink.offset, e.message, delay)  # fmt: skip
                        if self._stop.wait(delay) or self._superseded(order):
                            return
                # No fsync: the model store copies the staged file (fsynced) and its digest
                # is checked against the manifest again at install, so a torn file never installs.
                actual = sink.close(fsync=False)
                if actual != order.sha256:
                    raise errors.FailedPrecondition(
                        f"the downloaded file's sha256 {actual[:16]}... does not match the signed manifest's "
                        f"{order.sha256[:16]}...; discarded it, the current version stays active"
                    )
                self.staged_dir.mkdir(parents=True, exist_ok=True)
                os.replace(partial, staged)
                self._set(order, "verified", "", order.size_bytes, client)
        finally:
            sink.close(fsync=False)  # no-op when closed above; otherwise keeps what arrived for a resume

    def _superseded(self, order: Order) -> bool:
        current = self.orders.get(order.rollout_id)
        return current is None or current.state == "superseded"

    def _receive(self, order: Order, client, sink: PartialFile) -> None:
        last_report = time.monotonic()
        for at, data in client.download(order.name, order.version, sink.offset):
            if at != sink.offset:
                raise _Truncated(f"the coordinator sent bytes from {at}, expected {sink.offset}")
            if sink.offset + len(data) > order.size_bytes:
                raise errors.FailedPrecondition(
                    f"the coordinator sent more than the {order.size_bytes} bytes the signed manifest names"
                )
            sink.put(data)
            if self._stop.is_set():
                return
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                self._set(order, "downloading", "", sink.offset, client)
                last_report = time.monotonic()

    def _activate(self, order: Order) -> None:
        staged = self.staged_dir / f"{order.sha256}.onnx"
        if self._installed(order):
            self._models.activate(order.name, order.version)
        else:
            if not staged.exists():
                raise errors.FailedPrecondition(f"the verified file of {order.ref} is gone from {self.staged_dir}")
            record = self._models.install(
                staged, order.name, order.version, activate=True, source="registry", move=True
            )
            if record.sha256 != order.sha256:  # the staged file changed after it was verified
                self._models.remove(order.name, order.version)
                raise errors.FailedPrecondition(f"the staged file of {order.ref} changed after verification")
        staged.unlink(missing_ok=True)
        self._set(order, "active", "")
        log.info("model %s is active (order %s)", order.ref, order.rollout_id)

    def _fail(self, order: Order | None, reason: str) -> None:
        if order is None:
            return
        self._discard(order)
        self._set(order, "failed", reason)
        log.warning("order %s for %s failed: %s", order.rollout_id, order.ref, reason)

    def _discard(self, order: Order | None) -> None:
        if order is not None:
            (self.partial_dir / f"{order.sha256}.part").unlink(missing_ok=True)
            (self.staged_dir / f"{order.sha256}.onnx").unlink(missing_ok=True)

    def _set(self, order: Order, state: str, reason: str, bytes_received: int = 0, client=None) -> None:
        """Record the state here, then tell the coordinator; a report it cannot take now
        (busy, unreachable) is retried with backoff until it does."""
        values = {"state": state, "reason": reason}
        if bytes_received:
            values["bytes_received"] = bytes_received
        self.orders.update(order.rollout_id, **values)
        with self._lock:
            self._unreported.pop(order.rollout_id, None)
        self._report(order.rollout_id, (state, reason, bytes_received), client)

    def _report(self, rollout_id: str, report: tuple[str, str, int], client=None) -> bool:
        state, reason, bytes_received = report
        try:
            if client is not None:
                client.report(rollout_id, STATE_TO_PROTO[state], reason, bytes_received)
            else:
                with self._client_factory() as fresh:  # type: ignore[attr-defined]
                    fresh.report(rollout_id, STATE_TO_PROTO[state], reason, bytes_received)
        except TRANSIENT as e:
            log.info("could not report %s of order %s yet (%s); will retry", state, rollout_id, e.message)
            with self._lock:
                self._unreported.setdefault(rollout_id, report)
            return False
        except errors.SiloError as e:  # refused for good (e.g. the order is unknown there)
            log.warning("the coordinator refused the %s report of order %s: %s", state, rollout_id, e.message)
        return True

    def _retry_reports(self) -> None:
        if not self._unreported or time.monotonic() < self._next_report_at:
            return
        with self._lock:
            pending, self._unreported = self._unreported, {}
        delivered = True
        for rollout_id, report in pending.items():
            if delivered:
                delivered = self._report(rollout_id, report)
            else:  # the coordinator is still busy: keep the rest for the next round
                with self._lock:
                    self._unreported.setdefault(rollout_id, report)
        if delivered:
            self._report_backoff.reset()
        else:
            self._next_report_at = time.monotonic() + self._report_backoff.next_delay()

    @property
    def unreported(self) -> int:
        """Reports waiting for the coordinator to take them."""
        with self._lock:
            return len(self._unreported)
