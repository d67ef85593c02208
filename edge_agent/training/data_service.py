"""The agent's side of a ClientApp worker's data requests: the site's policy, enforced in
the agent's process.

A worker is not given the catalog's path, a source's location or a credential: its app asks
for rows over the worker's pipe (``edge_agent.catalog.reading.AgentReader``) and this service
answers from a ``DatasetReader`` opened here, on the one dataset the job was allowed,
with the sensitive columns the site allows this app and no others.

Requests are JSON from the worker (never unpickled here: the worker runs code the agent
does not trust with its own process); answers are pickles the worker reads. Operations:

- ``{"op": "describe"}``: the dataset as the app may know it (``DatasetReader.visible``);
- ``{"op": "scan", "columns", "present", "batch_rows"}``: checks the columns, opens a scan,
  answers its cursor number;
- ``{"op": "next", "cursor"}``: the scan's next batch (a dict of arrays), None at its end;
- ``{"op": "close", "cursor"}``: ends a scan early.

Scans still open when a message's reply is sent are closed then (``end_message``).
An answer is at most ``MAX_BATCH_ROWS`` rows; the agent holds one batch of a scan at a time.
"""

from __future__ import annotations

import json
import logging
import pickle
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silolink import errors

from ..catalog.reading import DatasetReader
from ..catalog.sources import Batch

log = logging.getLogger(__name__)
MAX_BATCH_ROWS = 1 << 20  # one answer stays a bounded size whatever an app asks for
MAX_OPEN_SCANS = 16
MAX_COLUMNS = 10_000


@dataclass(frozen=True)
class DataGrant:
    """What one job's app may read: one dataset of the site's catalog, and which of its
    sensitive columns. Stays in the agent; the worker sees none of it."""

    catalog_path: Path
    dataset: str
    sensitive_allowed: tuple[str, ...] = ()


class DataService:
    """Answers one worker's data requests (one at a time: the worker's pipe is serial)."""

    def __init__(self, grant: DataGrant, label: str) -> None:
        self._grant = grant
        self._label = label  # the app, for messages and the log
        self._reader: DatasetReader | None = None
        self._scans: dict[int, Iterator[Batch]] = {}
        self._next_cursor = 1

    def answer(self, request_bytes: bytes) -> bytes:
        """``b"A"`` + pickled answer, or ``b"E"`` + JSON ``{"code", "message"}``."""
        try:
            answer = self._handle(_parse(request_bytes))
            return b"A" + pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except errors.SiloError as e:
            if e.site_detail:  # for this site's log only: the app (and so the coordinator) gets the message
                log.warning("app %s: %s [%s]", self._label, e.message, e.site_detail)
            return b"E" + json.dumps({"code": e.code.value, "message": e.message}).encode()
        except Exception:  # noqa: BLE001 - a source's own failure: details stay in the site's log
            ref = uuid.uuid4().hex[:12]
            log.exception("app %s: reading dataset %r failed (ref %s)", self._label, self._grant.dataset, ref)
            message = f"reading dataset {self._grant.dataset!r} failed; details in the site's agent log (ref {ref})"
            return b"E" + json.dumps({"code": errors.Code.INTERNAL.value, "message": message}).encode()

    def end_message(self) -> None:
        """The app replied: scans it left open end (their sources' connections close), and
        the next message reads the catalog afresh (the dataset may have been replaced)."""
        for scan in self._scans.values():
            _close(scan)
        self._scans.clear()
        self._reader = None

    def _handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "describe":
            return self._open().visible()
        if op == "scan":
            return self._scan(request)
        if op in ("next", "close"):
            cursor = request.get("cursor")
            if not isinstance(cursor, int) or cursor not in self._scans:
                raise errors.InvalidArgument(f"no open scan {cursor!r} (scans end when the app replies to a message)")
            if op == "close":
                _close(self._scans.pop(cursor))
                return None
            batch = next(self._scans[cursor], None)
            if batch is None:
                del self._scans[cursor]
            return batch
        raise errors.InvalidArgument(f"unknown data request {op!r}")

    def _open(self) -> DatasetReader:
        if self._reader is None:
            grant = self._grant
            self._reader = DatasetReader(grant.catalog_path, grant.dataset, grant.sensitive_allowed)
        return self._reader

    def _scan(self, request: dict[str, Any]) -> int:
        columns, present = request.get("columns"), request.get("present", [])
        batch_rows = request.get("batch_rows")
        for value in (columns, present):
            if not isinstance(value, list) or len(value) > MAX_COLUMNS or not all(isinstance(c, str) for c in value):
                raise errors.InvalidArgument("a scan names its columns as a list of strings")
        if not isinstance(batch_rows, int) or not 1 <= batch_rows <= MAX_BATCH_ROWS:
            raise errors.InvalidArgument(f"batch_rows must be 1 to {MAX_BATCH_ROWS}")
        if len(self._scans) >= MAX_OPEN_SCANS:
            raise errors.ResourceExhausted(f"an app may keep {MAX_OPEN_SCANS} scans open at once")
        scan = self._open().scan(columns, present=present, batch_rows=batch_rows)  # the policy's check
        cursor, self._next_cursor = self._next_cursor, self._next_cursor + 1
        self._scans[cursor] = scan
        return cursor


def _parse(data: bytes) -> dict[str, Any]:
    try:
        request = json.loads(data)
    except ValueError:
        raise errors.InvalidArgument("a data request is not JSON") from None
    if not isinstance(request, dict):
        raise errors.InvalidArgument("a data request is a JSON object")
    return request


def _close(scan: Iterator[Batch]) -> None:
    close = getattr(scan, "close", None)
    if close is not None:
        close()
