"""The registry's tables in coordinator.db: model versions, rollouts, and each site's order."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from silolink.db import Migrations, SqliteStore
from silolink.onnx_models import Signature

migrations = Migrations("coordinator.registry")

# A site's order moves through these; the last three are final.
STATES = ("held", "pending", "downloading", "verified", "awaiting_approval", "active", "failed", "superseded")
FINAL_STATES = frozenset({"active", "failed", "superseded"})
# Orders re-sent when a site connects (the agent answers with its own state for ones it has).
OPEN_STATES = ("pending", "downloading", "verified", "awaiting_approval")


@migrations()
def m001_registry(db) -> None:
    db["registry_models"].create(
        {
            "name": str,
            "version": str,
            "sha256": str,
            "size_bytes": int,
            "signature": str,
            "description": str,
            "creator": str,
            "source_job": str,
            "created_at": float,
            "deprecated_at": float,
            "manifest": bytes,
            "manifest_signature": bytes,
        },
        pk=("name", "version"),
        not_null={"sha256", "size_bytes", "signature", "created_at", "manifest", "manifest_signature"},
    )
    db["registry_models"].create_index(["sha256"])
    db["registry_rollouts"].create(
        {
            "rollout_id": str,
            "name": str,
            "version": str,
            "kind": str,
            "canary": int,
            "targets": str,
            "created_by": str,
            "created_at": float,
        },
        pk="rollout_id",
    )
    db["registry_rollouts"].create_index(["name", "version"])
    db["registry_orders"].create(
        {
            "rollout_id": str,
            "site": str,
            "name": str,
            "version": str,
            "position": int,
            "state": str,
            "reason": str,
            "bytes_received": int,
            "updated_at": float,
        },
        pk=("rollout_id", "site"),
        foreign_keys=[("rollout_id", "registry_rollouts", "rollout_id")],
    )
    db["registry_orders"].create_index(["site", "state"])
    db["registry_orders"].create_index(["name", "version"])


@migrations()
def m002_rollout_study(db) -> None:
    # Every rollout belongs to a study (issue 18); rollouts from before studies were the default study's.
    db["registry_rollouts"].add_column("study", str, not_null_default="")


@migrations()
def m003_orders_by_state(db) -> None:
    # The overview asks which versions still have sites on their way (few open orders among
    # many final ones): an index on the state answers it without reading every order.
    db["registry_orders"].create_index(["state", "name", "version"])
    # A version's sites in name order (status pages, each site's latest order, sites sent it)
    # straight from an index instead of sorting its orders on every page.
    db["registry_orders"].create_index(["name", "version", "site"])


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    sha256: str
    size_bytes: int
    signature: Signature
    description: str
    creator: str
    source_job: str
    created_at: float
    deprecated_at: float | None
    manifest: bytes
    manifest_signature: bytes

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelVersion:
        return cls(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
            signature=Signature.from_dict(json.loads(row["signature"])),
            description=row["description"] or "",
            creator=row["creator"] or "",
            source_job=row["source_job"] or "",
            created_at=row["created_at"],
            deprecated_at=row["deprecated_at"],
            manifest=bytes(row["manifest"]),
            manifest_signature=bytes(row["manifest_signature"]),
        )


@dataclass(frozen=True)
class RolloutRecord:
    rollout_id: str
    name: str
    version: str
    kind: str
    canary: int
    targets: list[str]
    created_by: str
    created_at: float
    study: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RolloutRecord:
        return cls(**{**row, "targets": json.loads(row["targets"])})


@dataclass(frozen=True)
class OrderRecord:
    rollout_id: str
    site: str
    name: str
    version: str
    position: int
    state: str
    reason: str
    bytes_received: int
    updated_at: float


class RegistryStore(SqliteStore):
    """Model versions, rollouts and orders. Callers group writes with ``atomic()``."""

    migrations = migrations

    # -- model versions ------------------------------------------------------------------
    def add_version(self, record: ModelVersion) -> None:
        with self.lock:
            row = dict(record.__dict__)
            row["signature"] = json.dumps(record.signature.to_dict())
            self.db["registry_models"].insert(row)

    def get_version(self, name: str, version: str) -> ModelVersion | None:
        with self.lock:
            rows = list(self.db["registry_models"].rows_where("name = ? and version = ?", [name, version]))
        return ModelVersion.from_row(rows[0]) if rows else None

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        where, args = ("name = ?", [name]) if name else (None, [])
        with self.lock:
            rows = self.db["registry_models"].rows_where(where, args, order_by="name, created_at, version")
            return [ModelVersion.from_row(r) for r in rows]

    def sha_in_use(self, sha256: str) -> bool:
        with self.lock:
            return bool(
                self.db.execute("select count(*) from registry_models where sha256 = ?", [sha256]).fetchone()[0]
            )

    def deprecate(self, name: str, version: str, at: float) -> None:
        with self.lock:
            self.db["registry_models"].update((name, version), {"deprecated_at": at})

    # -- rollouts and orders -------------------------------------------------------------
    def add_rollout(self, rollout: RolloutRecord, orders: list[OrderRecord]) -> None:
        with self.atomic():
            self.db["registry_rollouts"].insert({**rollout.__dict__, "targets": json.dumps(rollout.targets)})
            self.db["registry_orders"].insert_all([o.__dict__ for o in orders])

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        with self.lock:
            rows = list(self.db["registry_rollouts"].rows_where("rollout_id = ?", [rollout_id]))
        return RolloutRecord.from_row(rows[0]) if rows else None

    def latest_rollout(self, name: str, version: str) -> RolloutRecord | None:
        with self.lock:
            rows = list(
                self.db["registry_rollouts"].rows_where(
                    "name = ? and version = ?", [name, version], order_by="created_at desc", limit=1
                )
            )
        return RolloutRecord.from_row(rows[0]) if rows else None

    def latest_of_name(self, name: str) -> RolloutRecord | None:
        with self.lock:
            rows = list(
                self.db["registry_rollouts"].rows_where("name = ?", [name], order_by="created_at desc", limit=1)
            )
        return RolloutRecord.from_row(rows[0]) if rows else None

    # Each site's latest order for one version: the order of the newest rollout that reached it.
    _LATEST = (
        "WITH ranked AS (SELECT o.rollout_id, o.site, o.name, o.version, o.position, o.state, o.reason,"
        " o.bytes_received, o.updated_at, ROW_NUMBER() OVER (PARTITION BY o.site ORDER BY r.created_at DESC,"
        " o.rowid DESC) AS newest FROM registry_orders o JOIN registry_rollouts r ON r.rollout_id = o.rollout_id"
        " WHERE o.name = ? AND o.version = ?), latest AS (SELECT * FROM ranked WHERE newest = 1) "
    )

    def latest_orders(
        self, name: str, version: str, state: str = "", limit: int = 0, offset: int = 0
    ) -> tuple[list[OrderRecord], int, dict[str, int]]:
        """Each site's latest order for ``name:version``, by site name: the page asked for
        (``limit`` 0: all), how many match ``state`` ("" any), and how many are in each state."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit else ""
        fields = [f.name for f in dataclasses.fields(OrderRecord)]
        with self.lock:
            counts = dict(
                self.db.execute(
                    self._LATEST + "SELECT state, COUNT(*) FROM latest GROUP BY state", [name, version]
                ).fetchall()
            )
            rows = self.db.execute(
                self._LATEST + f"SELECT {', '.join(fields)} FROM latest {where} ORDER BY site{page}",
                [name, version, *args],
            ).fetchall()
        total = counts.get(state, 0) if state else sum(counts.values())
        return [OrderRecord(*row) for row in rows], total, counts

    def open_by_version(self, states: tuple[str, ...]) -> list[tuple[str, str, dict[str, int], float]]:
        """(name, version, sites per state, when its newest rollout started) for every version
        with orders in ``states``, the most recently rolled out first."""
        marks = ", ".join("?" for _ in states)
        with self.lock:
            # Counted from the (state, name, version) index alone: joining each order to its
            # rollout for the start time tripled the cost (160,000 open orders: 58 ms, 18 ms).
            counted = self.db.execute(
                f"SELECT name, version, state, COUNT(*) FROM registry_orders WHERE state IN ({marks})"
                " GROUP BY name, version, state",
                list(states),
            ).fetchall()
            started = {
                (name, version): at
                for name, version, at in self.db.execute(
                    "SELECT name, version, MAX(created_at) FROM registry_rollouts GROUP BY name, version"
                )
            }
        found: dict[tuple[str, str], dict[str, int]] = {}
        for name, version, state, count in counted:
            found.setdefault((name, version), {})[state] = count
        ordered = sorted(found.items(), key=lambda item: -started.get(item[0], 0.0))
        return [(name, version, counts, started.get((name, version), 0.0)) for (name, version), counts in ordered]

    def sites_sent(self, name: str, version: str) -> int:
        """How many sites were sent ``name:version`` (any state)."""
        with self.lock:
            return self.db.execute(
                "SELECT COUNT(DISTINCT site) FROM registry_orders WHERE name = ? AND version = ?", [name, version]
            ).fetchone()[0]

    def orders(self, where: str, args: list[Any]) -> list[OrderRecord]:
        with self.lock:
            return [
                OrderRecord(**r) for r in self.db["registry_orders"].rows_where(where, args, order_by="position, site")
            ]

    def order(self, rollout_id: str, site: str) -> OrderRecord | None:
        found = self.orders("rollout_id = ? and site = ?", [rollout_id, site])
        return found[0] if found else None

    def update_order(self, rollout_id: str, site: str, **values: Any) -> None:
        with self.lock:
            self.db["registry_orders"].update((rollout_id, site), values)
