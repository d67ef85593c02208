"""The agent's own exchange records: envelopes it received (so a redelivery is never written
twice) and agreements it accepted (it opens only what it agreed to receive)."""

from __future__ import annotations

from dataclasses import dataclass

from silolink.db import Migrations, SqliteStore

migrations = Migrations("agent.exchange")


@migrations()
def m001_exchange(db) -> None:
    db["received"].create(
        {
            "envelope_id": str,
            "sender": str,
            "purpose": str,
            "path": str,
            "size": int,
            "sha256": str,
            "received_at": float,
        },
        pk="envelope_id",
    )
    db["accepted"].create(
        {"id": str, "sender": str, "purpose": str, "accepted_at": float},
        pk="id",
    )


@dataclass(frozen=True)
class Received:
    envelope_id: str
    sender: str
    purpose: str
    path: str
    size: int
    sha256: str
    received_at: float


class SiteExchangeStore(SqliteStore):
    migrations = migrations

    def received(self, envelope_id: str) -> Received | None:
        with self.lock:
            rows = list(self.db["received"].rows_where("envelope_id = ?", [envelope_id]))
        return Received(**rows[0]) if rows else None

    def record_received(self, item: Received) -> None:
        with self.atomic():
            self.db["received"].upsert(item.__dict__, pk="envelope_id")

    def accept(self, agreement_id: str, sender: str, purpose: str, at: float) -> None:
        with self.atomic():
            self.db["accepted"].upsert(
                {"id": agreement_id, "sender": sender, "purpose": purpose, "accepted_at": at}, pk="id"
            )

    def accepted(self, sender: str, purpose: str) -> bool:
        with self.lock:
            return bool(list(self.db["accepted"].rows_where("sender = ? AND purpose = ?", [sender, purpose], limit=1)))
