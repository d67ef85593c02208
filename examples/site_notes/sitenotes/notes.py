"""The plain logic and state of site notes: no gRPC here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.db import Migrations, SqliteStore, open_database

migrations = Migrations("sitenotes")
MAX_LENGTH = 500


@migrations()
def m001_notes(db) -> None:
    db["notes"].create({"id": int, "site": str, "text": str, "posted_at_s": float}, pk="id")


@dataclass(frozen=True)
class Note:
    site: str
    text: str
    posted_at_s: float


class NoteBook(SqliteStore):
    migrations = migrations

    @classmethod
    def open(cls, data_dir: Path) -> NoteBook:
        return cls(open_database(data_dir / "extensions" / "sitenotes.db"))

    def post(self, site: str, text: str) -> Note:
        text = text.strip()
        if not 1 <= len(text) <= MAX_LENGTH:
            raise errors.InvalidArgument(f"a note must have 1 to {MAX_LENGTH} characters, not {len(text)}")
        note = Note(site, text, time.time())
        with self.lock:
            self.db["notes"].insert(note.__dict__)
        return note

    def all(self) -> list[Note]:
        with self.lock:
            rows = self.db["notes"].rows_where(order_by="posted_at_s desc")
            return [Note(r["site"], r["text"], r["posted_at_s"]) for r in rows]
