"""The audit log's table and the ``AuditLog`` that appends to it."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from itertools import chain
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silolink.audit.chain import GENESIS, AuditEntry, encode_details, seal, verify
from silolink.db import Migrations, SqliteStore

migrations = Migrations("coordinator.audit")


@migrations()
def m001_audit_log(db) -> None:
    db["audit_log"].create(
        {
            "seq": int,
            "at": float,
            "actor": str,
            "action": str,
            "subject": str,
            "details": str,
            "prev_hash": str,
            "hash": str,
            "signature": str,
        },
        pk="seq",
        not_null={"at", "actor", "action", "subject", "details", "prev_hash", "hash", "signature"},
    )


class AuditLog(SqliteStore):
    """Append-only: ``record`` adds a signed entry at the head; nothing updates or deletes."""

    migrations = migrations

    def __init__(self, db, key: Ed25519PrivateKey, clock: Callable[[], float] = time.time, lock=None) -> None:
        super().__init__(db, lock)
        self._key = key
        self._clock = clock

    @property
    def public_key(self):
        return self._key.public_key()

    def record(self, actor: str, action: str, subject: str, **details: Any) -> AuditEntry:
        """Append an entry. ``actor`` is who acted (``operator:admin``, ``site:hospital-a``,
        ``coordinator``), ``action`` a dotted verb (``site.revoke``), ``subject`` what it acted on.
        """
        return self.record_batch([(actor, action, subject, details)])[0]

    def record_batch(self, items: list[tuple[str, str, str, dict[str, Any]]]) -> list[AuditEntry]:
        """Append ``(actor, action, subject, details)`` entries in one transaction, signing
        only the last (its signature covers the others through the hash links)."""
        if not items:
            return []
        conn = self.db.conn
        # Inside a caller's transaction (the exchange's group commit) no savepoint of our
        # own: the one INSERT below is atomic by itself, and on that path every statement
        # counts, since each gives up the GIL and may wait to take it back.
        with self.lock, nullcontext() if conn.in_transaction else self.atomic():
            seq, prev = self._head_link()
            at = self._clock()
            sealed, rows = [], []
            for i, (actor, action, subject, details) in enumerate(items):
                seq += 1
                details_json = encode_details(details)  # once, for the hash and the row
                entry = seal(
                    AuditEntry(seq, at, actor, action, subject, details, prev),
                    self._key if i == len(items) - 1 else None,
                    details_json,
                )
                sealed.append(entry)
                rows.append((seq, at, actor, action, subject, details_json, prev, entry.hash, entry.signature))
                prev = entry.hash
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert_rows(len(part)), list(chain.from_iterable(part)))
        return sealed

    def _head_link(self) -> tuple[int, str]:
        """The head's sequence number and hash (0 and the genesis hash when empty): all a
        new entry needs, read without parsing the head's details."""
        row = self.db.conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def head(self) -> AuditEntry | None:
        with self.lock:
            rows = list(self.db.query("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1"))
        return _entry(rows[0]) if rows else None

    def entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit_log WHERE seq > ? ORDER BY seq"
        params: list[Any] = [after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.lock:
            return [_entry(r) for r in self.db.query(sql, params)]

    def verify(self) -> str:
        """Verify the whole stored chain; return the head hash."""
        return verify(self.entries(), self.public_key)


_ROWS_PER_INSERT = 1000  # 9 values a row, well within SQLite's limit on bound values


@functools.lru_cache(maxsize=64)
def _insert_rows(count: int) -> str:
    row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
    return (
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash, signature) VALUES "
        + ", ".join([row] * count)
    )


def _entry(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(**{**row, "details": json.loads(row["details"])})
