"""Segment files: where small envelopes committed in batches keep their bytes.

A small envelope's sealed key and ciphertext (about 2.3 KB for 1 KiB of hybrid-sealed
payload) cost SQLite a page of its own, and inserting them was most of a batch commit's
time. Instead the committer appends a batch's bytes to the active segment file in one
write, fdatasyncs it, and only then commits the rows that point into it (segment, offset),
so a committed row never points at bytes that are not on disk. Bytes appended by a commit
that then failed (or for a resent envelope) are never referenced and go when their segment
goes. Appending runs one batch ahead of committing (see committer.py): from ``append``
until ``settled`` a segment has rows in flight and is never deleted.

A segment is deleted once none of its envelopes is pending (counted in memory, rebuilt
from the database at start). The sweeper moves the last few pending envelopes of a
mostly-empty segment into their rows so one slow recipient cannot pin a whole segment.
After a restart a fresh segment is started, so a torn write at the tail of an old one is
never appended to or referenced.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".seg"


def segment_name(number: int) -> str:
    return f"{number:010d}{SUFFIX}"


class Segments:
    """Append-only segment files in ``folder``; ``live`` maps segment number to the
    (count, bytes) of its pending envelopes, as the database says at start."""

    def __init__(self, folder: Path, max_bytes: int, live: dict[int, tuple[int, int]]) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._live = {n: [count, size] for n, (count, size) in live.items()}
        # Segment number -> appended batches whose transaction has not ended yet.
        self._in_flight: dict[int, int] = {}
        numbers = []
        for path in folder.glob(f"*{SUFFIX}"):
            number = _number(path)
            if number is None or number not in self._live:
                path.unlink(missing_ok=True)  # nothing committed points into it
            else:
                numbers.append(number)
        self._next = max([*numbers, *self._live, 0]) + 1
        self._active: int | None = None
        self._fd: int | None = None
        self._size = 0

    def path(self, number: int) -> Path:
        return self._folder / segment_name(number)

    def append(self, blobs: list[bytes]) -> tuple[int, list[int]]:
        """Write ``blobs`` durably to the active segment; their segment and offsets. Called
        by one thread only; ``settled`` must follow once the rows' transaction has ended."""
        if self._fd is None or self._size >= self._max_bytes:
            self._rotate()
        assert self._fd is not None and self._active is not None
        offsets = []
        at = self._size
        for blob in blobs:
            offsets.append(at)
            at += len(blob)
        try:
            data = b"".join(blobs)
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fdatasync(self._fd)
        except OSError:
            self._close_active()  # a torn tail: never append after it
            raise
        self._size = at
        with self._lock:
            self._in_flight[self._active] = self._in_flight.get(self._active, 0) + 1
        return self._active, offsets

    def settled(self, number: int) -> None:
        """The transaction of a batch appended to segment ``number`` committed or failed."""
        with self._lock:
            left = self._in_flight.pop(number, 1) - 1
            if left:
                self._in_flight[number] = left
                return
            if number == self._active or self._live.get(number, [0])[0] > 0:
                return
            self._live.pop(number, None)
        self.path(number).unlink(missing_ok=True)

    def added(self, number: int, count: int, size: int) -> None:
        """Rows pointing at these bytes are being committed (negative to take it back if
        the commit fails). Called inside the transaction, so no recipient can release one
        of them before it is counted."""
        with self._lock:
            live = self._live.setdefault(number, [0, 0])
            live[0] += count
            live[1] += size

    def released(self, number: int, size: int) -> None:
        """One envelope of segment ``number`` is no longer pending."""
        with self._lock:
            live = self._live.get(number)
            if live is None:
                return
            live[0] -= 1
            live[1] -= size
            if live[0] > 0 or number == self._active or number in self._in_flight:
                return
            del self._live[number]
        self.path(number).unlink(missing_ok=True)

    def forget(self, number: int) -> None:
        """Every pending envelope of segment ``number`` has moved out: delete it."""
        with self._lock:
            self._live.pop(number, None)
        self.path(number).unlink(missing_ok=True)

    def read(self, number: int, offset: int, size: int) -> bytes | None:
        """The bytes at ``offset``; None if the segment is gone."""
        try:
            fd = os.open(self.path(number), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        return data if len(data) == size else None

    def sparse(self, max_fill: float) -> list[int]:
        """Closed segments whose pending bytes are under ``max_fill`` of the file."""
        with self._lock:
            candidates = [
                (n, size) for n, (_, size) in self._live.items() if n != self._active and n not in self._in_flight
            ]
        found = []
        for number, size in candidates:
            try:
                total = self.path(number).stat().st_size
            except FileNotFoundError:
                continue
            if size < max_fill * total:
                found.append(number)
        return found

    def close(self) -> None:
        self._close_active()

    def _rotate(self) -> None:
        self._close_active()
        number = self._next
        self._next += 1
        fd = os.open(self.path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        _fsync_dir(self._folder)  # the new name must survive a crash as long as rows point into it
        with self._lock:
            self._active, self._fd, self._size = number, fd, 0

    def _close_active(self) -> None:
        with self._lock:
            number, fd = self._active, self._fd
            self._active, self._fd = None, None
            empty = number is not None and self._live.get(number, [0])[0] <= 0 and number not in self._in_flight
            if empty:
                self._live.pop(number, None)
        if fd is not None:
            os.close(fd)
        if empty:
            self.path(number).unlink(missing_ok=True)  # type: ignore[arg-type]


def _number(path: Path) -> int | None:
    try:
        return int(path.name[: -len(SUFFIX)])
    except ValueError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
