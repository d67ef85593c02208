"""The site's HPKE keys on disk: one file per key (owner-only), the newest unretired one
current. Rotation retires the old key but keeps it until envelopes sealed to it drain."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.envelope import KeyPair, PublishedKey
from silolink.files import private_dir, write_atomic


@dataclass(frozen=True)
class StoredKey:
    pair: KeyPair
    created_at_ms: int
    retired_at: float | None = None

    @property
    def key_id(self) -> str:
        return self.pair.key_id

    def published(self, site: str) -> PublishedKey:
        return PublishedKey(site, self.pair.suite, self.key_id, self.pair.public_bytes, self.created_at_ms)


class KeyRing:
    def __init__(self, folder: Path) -> None:
        self._folder = private_dir(folder)
        self._lock = threading.Lock()

    def _path(self, key_id: str) -> Path:
        return self._folder / f"{key_id}.key"

    def _save(self, key: StoredKey) -> None:
        data = {
            "suite": key.pair.suite,
            "private": base64.b64encode(key.pair.private_bytes).decode(),
            "public": base64.b64encode(key.pair.public_bytes).decode(),
            "created_at_ms": key.created_at_ms,
            "retired_at": key.retired_at,
        }
        write_atomic(self._path(key.key_id), json.dumps(data).encode())

    def keys(self) -> list[StoredKey]:
        """Every key, newest first."""
        found = []
        for path in self._folder.glob("*.key"):
            data = json.loads(path.read_text())
            pair = KeyPair(data["suite"], base64.b64decode(data["private"]), base64.b64decode(data["public"]))
            found.append(StoredKey(pair, data["created_at_ms"], data.get("retired_at")))
        return sorted(found, key=lambda k: k.created_at_ms, reverse=True)

    def current(self, suite: str) -> StoredKey:
        """The current key, made on first use with ``suite``."""
        with self._lock:
            for key in self.keys():
                if key.retired_at is None:
                    return key
            return self._new(suite)

    def _new(self, suite: str) -> StoredKey:
        key = StoredKey(KeyPair.generate(suite), int(time.time() * 1000))
        self._save(key)
        return key

    def rotate(self, suite: str) -> StoredKey:
        with self._lock:
            now = time.time()
            for key in self.keys():
                if key.retired_at is None:
                    self._save(StoredKey(key.pair, key.created_at_ms, now))
            return self._new(suite)

    def get(self, key_id: str) -> KeyPair:
        path = self._path(key_id)
        if not path.exists():
            raise errors.FailedPrecondition(
                f"the envelope is sealed to key {key_id}, which this site no longer holds; ask the sender to send again"
            )
        for key in self.keys():
            if key.key_id == key_id:
                return key.pair
        raise errors.FailedPrecondition(f"key {key_id} is unreadable")

    def prune(self, retention_s: float, in_use: set[str]) -> list[str]:
        """Delete retired keys older than ``retention_s`` that no waiting envelope needs."""
        removed = []
        with self._lock:
            now = time.time()
            for key in self.keys():
                if key.retired_at is not None and now - key.retired_at > retention_s and key.key_id not in in_use:
                    self._path(key.key_id).unlink(missing_ok=True)
                    removed.append(key.key_id)
        return removed
