"""The registry's tables in coordinator.db: model versions, rollouts, and each site's order."""

from __future__ import annotations

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
