"""The app registry's table in coordinator.db: one row per published app version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from silolink.db import Migrations, SqliteStore

migrations = Migrations("coordinator.apps")


@migrations()
def m001_apps(db) -> None:
    db["apps_versions"].create(
        {
            "name": str,
            "version": str,
            "sha256": str,
            "size_bytes": int,
            "publisher": str,
            "declared": str,  # JSON: files, dependencies, config, serverapp, clientapp, description
            "creator": str,
            "created_at": float,
            "builtin": int,
            "manifest": bytes,
            "manifest_signature": bytes,
        },
        pk=("name", "version"),
        not_null={"sha256", "size_bytes", "declared", "created_at", "manifest", "manifest_signature"},
    )
    db["apps_versions"].create_index(["sha256"])


@dataclass(frozen=True)
class AppVersion:
    """A published app version: what its bundle declares, and its signed manifest."""

    name: str
    version: str
    sha256: str
    size_bytes: int
    publisher: str
    files: list[dict[str, Any]]
    dependencies: list[str]
    config: dict[str, Any]
    serverapp: str
    clientapp: str
    description: str
    creator: str
    created_at: float
    builtin: bool
    manifest: bytes
    manifest_signature: bytes

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AppVersion:
        declared = json.loads(row["declared"])
        return cls(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
            publisher=row["publisher"] or "",
            files=declared["files"],
            dependencies=declared["dependencies"],
            config=declared["config"],
            serverapp=declared["serverapp"],
            clientapp=declared["clientapp"],
            description=declared["description"],
            creator=row["creator"] or "",
            created_at=row["created_at"],
            builtin=bool(row["builtin"]),
            manifest=bytes(row["manifest"]),
            manifest_signature=bytes(row["manifest_signature"]),
        )

    def to_row(self) -> dict[str, Any]:
        declared = {
            k: getattr(self, k) for k in ("files", "dependencies", "config", "serverapp", "clientapp", "description")
        }
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "publisher": self.publisher,
            "declared": json.dumps(declared),
            "creator": self.creator,
            "created_at": self.created_at,
            "builtin": int(self.builtin),
            "manifest": self.manifest,
            "manifest_signature": self.manifest_signature,
        }


class AppStore(SqliteStore):
    """App versions. Callers group writes with ``atomic()``."""

    migrations = migrations

    def add(self, record: AppVersion) -> None:
        with self.lock:
            self.db["apps_versions"].insert(record.to_row())

    def get(self, name: str, version: str) -> AppVersion | None:
        with self.lock:
            rows = list(self.db["apps_versions"].rows_where("name = ? and version = ?", [name, version]))
        return AppVersion.from_row(rows[0]) if rows else None

    def versions(self, name: str | None = None) -> list[AppVersion]:
        where, args = ("name = ?", [name]) if name else (None, [])
        with self.lock:
            rows = self.db["apps_versions"].rows_where(where, args, order_by="name, created_at, version")
            return [AppVersion.from_row(r) for r in rows]
