"""A partial download file that is written and hashed on threads of its own.

The receiving thread hands each chunk over and goes straight back to the network; one
thread writes, another hashes, so receiving, writing and hashing overlap (file writes
and SHA-256 of large buffers release the GIL). ``offset`` counts the bytes handed over;
every one of them reaches the file before ``drain`` or ``close`` returns, so a broken
download resumes from ``offset``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path

QUEUE_CHUNKS = 8


class PartialFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._digest = hashlib.sha256()
        self.offset = 0
        if self.path.exists():  # left by an earlier attempt or a restart: hash what is there
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    self._digest.update(chunk)
                    self.offset += len(chunk)
        self._file = self.path.open("ab")
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._hash_queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="model-writer", daemon=True)
        self._hasher = threading.Thread(target=self._hash, name="model-hasher", daemon=True)
        self._thread.start()
        self._hasher.start()

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)
        self.offset += len(data)

    def drain(self) -> None:
        """Wait until every chunk handed over is in the file (and hashed)."""
        self._queue.join()
        self._hash_queue.join()
        if self._error is not None:
            raise self._error

    def close(self, fsync: bool = True) -> str:
        """Finish writing, close the file; the SHA-256 of everything in it, in hex."""
        if self._file.closed:
            return self._digest.hexdigest()
        self._queue.put(None)
        self._thread.join()
        self._hasher.join()
        try:
            if self._error is not None:
                raise self._error
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
        return self._digest.hexdigest()

    def _write(self) -> None:
        while True:
            data = self._queue.get()
            try:
                self._hash_queue.put(data)
                if data is None:
                    return
                if self._error is None:
                    self._file.write(data)
            except OSError as e:
                self._error = e
            finally:
                self._queue.task_done()

    def _hash(self) -> None:
        # Its own thread: writing and hashing the same chunk run on both cores at once.
        while (data := self._hash_queue.get()) is not None:
            self._digest.update(data)
            self._hash_queue.task_done()
        self._hash_queue.task_done()
