"""SQLite through sqlite-utils, shared by both daemons' stores.

One connection per database, shared by threads behind a lock: SQLite serializes writers
anyway, and one connection keeps transactions simple. WAL with synchronous=FULL: a commit
that returned is on disk, which is what an acknowledged envelope or an issued certificate
needs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

__all__ = ["Database", "Migrations", "SqliteStore", "open_database"]
Database = sqlite_utils.Database


def open_database(path: Path | None) -> Database:
    """Open (creating) the database at ``path``; None gives a private in-memory database."""
    if path is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return Database(conn, execute_plugins=False)


_locks_guard = threading.Lock()


def lock_of(db: Database) -> threading.RLock:
    """The one lock every store on this connection shares."""
    with _locks_guard:
        lock = getattr(db, "_silolink_lock", None)
        if lock is None:
            lock = threading.RLock()
            db._silolink_lock = lock  # type: ignore[attr-defined]
        return lock


class SqliteStore:
    """Base for a store: a database, a lock, migrations and an ``atomic`` block.

    Subclasses declare ``migrations`` (a ``Migrations`` set named after their area) and
    do every read and write under ``self.lock``. Several stores can share one database.
    """

    migrations: Migrations

    def __init__(self, db: Database, lock: threading.RLock | None = None) -> None:
        self.db = db
        # Stores on one connection share one lock by default: otherwise one store's writes
        # could land inside (or commit) another store's open transaction.
        self.lock = lock or lock_of(db)
        with self.lock:
            self.migrations.apply(db)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all.

        The outermost block takes SQLite's write lock up front (BEGIN IMMEDIATE): another
        process may share the file (a training job's own process does), and a transaction
        that read first and wrote later would fail at once instead of waiting its turn.
        """
        with self.lock:
            conn = self.db.conn
            if conn.in_transaction:
                with self.db.atomic():  # a savepoint inside the open transaction
                    yield
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
