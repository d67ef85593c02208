"""The site's record of model orders from the coordinator, in agent.db.

The daemon writes orders as they arrive and as they progress; ``edge-agent models
approve`` (a separate process) marks an order approved, and the daemon notices within a
fraction of a second. Orders survive restarts, so a download cut by a restart resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.db import Database, Migrations, SqliteStore, open_database

migrations = Migrations("agent.registry")

OPEN_STATES = ("pending", "downloading", "verified")


@migrations()
def m001_orders(db: Database) -> None:
    db["registry_orders"].create(
        {
            "rollout_id": str,
            "name": str,
            "version": str,
            "sha256": str,
            "size_bytes": int,
            "state": str,
            "reason": str,
            "bytes_received": int,
            "received_at": float,
            "updated_at": float,
            "approved_at": float,
        },
        pk="rollout_id",
        not_null={"name", "version", "sha256", "size_bytes", "state", "received_at", "updated_at"},
    )
    db["registry_orders"].create_index(["name", "state"])


@dataclass(frozen=True)
class Order:
    rollout_id: str
    name: str
    version: str
    sha256: str
    size_bytes: int
    state: str
    reason: str
    bytes_received: int
    received_at: float
    updated_at: float
    approved_at: float | None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class OrderStore(SqliteStore):
    migrations = migrations

    @classmethod
    def open(cls, state_db: Path) -> OrderStore:
        return cls(open_database(state_db))

    def add(self, rollout_id: str, name: str, version: str, sha256: str, size_bytes: int) -> Order:
        now = time.time()
        with self.lock:
            self.db["registry_orders"].insert(
                {
                    "rollout_id": rollout_id,
                    "name": name,
                    "version": version,
                    "sha256": sha256,
                    "size_bytes": size_bytes,
                    "state": "pending",
                    "reason": "",
                    "bytes_received": 0,
                    "received_at": now,
                    "updated_at": now,
                    "approved_at": None,
                }  # fmt: skip
            )
        return self.get(rollout_id)  # type: ignore[return-value]

    def get(self, rollout_id: str) -> Order | None:
        with self.lock:
            rows = list(self.db["registry_orders"].rows_where("rollout_id = ?", [rollout_id]))
        return Order(**rows[0]) if rows else None

    def where(self, clause: str, args: list) -> list[Order]:
        with self.lock:
            return [Order(**r) for r in self.db["registry_orders"].rows_where(clause, args, order_by="received_at")]

    def list(self) -> list[Order]:
        return self.where("1 = 1", [])

    def update(self, rollout_id: str, **values) -> None:
        with self.lock:
            self.db["registry_orders"].update(rollout_id, {**values, "updated_at": time.time()})

    def approve(self, name: str, version: str) -> Order:
        """Approve the order for ``name:version`` that awaits approval (the CLI calls this)."""
        with self.atomic():
            waiting = self.where("name = ? and version = ? and state = 'awaiting_approval'", [name, version])
            if not waiting:
                others = [o.ref for o in self.where("state = 'awaiting_approval'", [])]
                hint = f"awaiting approval: {', '.join(others)}" if others else "no model awaits approval"
                raise errors.NotFound(f"no order for {name}:{version} awaits approval at this site; {hint}")
            order = waiting[-1]
            if order.approved_at is None:
                self.update(order.rollout_id, approved_at=time.time())
        return self.get(order.rollout_id)  # type: ignore[return-value]
