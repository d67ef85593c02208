"""A partial download file, hashed as it is written.

Writing and hashing run inline in the receiving thread: measured here, handing chunks to
writer and hasher threads cost more CPU in GIL hand-offs than the overlap gained on 2
cores (1.0 s against 0.65 s of CPU for a 128 MB model, coordinator in the same process).
Measured again with the agent in a process of its own, 20 interleaved 256 MB downloads:
one writer-and-hasher thread gave a median of 308 MB/s and 0.59 s of agent CPU, inline
317 MB/s and 0.55 s. ``data`` may be a view of the received message (no copy is made
here either). ``offset`` counts the bytes written, so
a broken download resumes from it; a file left by an earlier attempt or a restart is
hashed again when it is reopened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class PartialFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._digest = hashlib.sha256()
        self.offset = 0
        if self.path.exists():
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    self._digest.update(chunk)
                    self.offset += len(chunk)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def put(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._digest.update(data)
        self.offset += len(data)

    def close(self, fsync: bool = True) -> str:
        """Close the file; the SHA-256 of everything in it, in hex."""
        if self._fd >= 0:
            try:
                if fsync:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
        return self._digest.hexdigest()
