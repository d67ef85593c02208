"""The coordinator's records of sites, enrollment tokens and issued certificates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from silolink.db import Migrations, SqliteStore

migrations = Migrations("coordinator.sites")


@migrations()
def m001_sites(db) -> None:
    db["sites"].create(
        {
            "name": str,
            "kind": str,
            "tags": str,
            "created_at": float,
            "enrolled_at": float,
            "revoked_at": float,
            "last_heartbeat": float,
            "version": str,
            "resources": str,
            "cert_expires_at": float,
        },
        pk="name",
        not_null={"kind", "tags", "created_at"},
    )
    # Only a hash of each token is kept: the database never holds a usable secret.
    db["tokens"].create(
        {"token_hash": str, "site": str, "created_at": float, "expires_at": float, "used_at": float},
        pk="token_hash",
        foreign_keys=[("site", "sites", "name")],
    )
    db["tokens"].create_index(["site"])
    db["certificates"].create(
        {
            "serial": str,
            "role": str,
            "name": str,
            "issued_at": float,
            "expires_at": float,
            "revoked_at": float,
        },
        pk="serial",
    )
    db["certificates"].create_index(["name"])


@dataclass(frozen=True)
class SiteRecord:
    """One site as stored."""

    name: str
    kind: str
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    enrolled_at: float | None = None
    revoked_at: float | None = None
    last_heartbeat: float | None = None
    version: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    cert_expires_at: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SiteRecord:
        return cls(
            name=row["name"],
            kind=row["kind"],
            tags=json.loads(row["tags"] or "{}"),
            created_at=row["created_at"],
            enrolled_at=row["enrolled_at"],
            revoked_at=row["revoked_at"],
            last_heartbeat=row["last_heartbeat"],
            version=row["version"] or "",
            resources=json.loads(row["resources"] or "{}"),
            cert_expires_at=row["cert_expires_at"],
        )


@dataclass(frozen=True)
class TokenRecord:
    token_hash: str
    site: str
    created_at: float
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class CertificateRecord:
    serial: str
    role: str
    name: str
    issued_at: float
    expires_at: float
    revoked_at: float | None = None


class SiteStore(SqliteStore):
    """Sites, tokens and certificates in SQLite. Callers group writes with ``atomic()``."""

    migrations = migrations

    def add_site(self, site: SiteRecord) -> None:
        with self.lock:
            self.db["sites"].insert(
                {
                    "name": site.name,
                    "kind": site.kind,
                    "tags": json.dumps(site.tags, sort_keys=True),
                    "created_at": site.created_at,
                    "version": "",
                    "resources": "{}",
                }
            )

    def get_site(self, name: str) -> SiteRecord | None:
        with self.lock:
            rows = list(self.db["sites"].rows_where("name = ?", [name]))
        return SiteRecord.from_row(rows[0]) if rows else None

    def list_sites(self) -> list[SiteRecord]:
        with self.lock:
            return [SiteRecord.from_row(r) for r in self.db["sites"].rows_where(order_by="name")]

    def update_site(self, name: str, **values: Any) -> None:
        for key in ("tags", "resources"):
            if key in values:
                values[key] = json.dumps(values[key], sort_keys=True)
        with self.lock:
            self.db["sites"].update(name, values)

    def update_contacts(self, rows: list[tuple[float, str, dict[str, Any], str]]) -> None:
        """Write many sites' (last_heartbeat, version, resources) in one transaction."""
        with self.atomic():
            self.db.conn.executemany(
                "UPDATE sites SET last_heartbeat = ?, version = ?, resources = ? WHERE name = ?",
                [(at, version, json.dumps(resources, sort_keys=True), name) for at, version, resources, name in rows],
            )

    def put_token(self, token: TokenRecord) -> None:
        """Store ``token``, replacing any unused token of the same site."""
        with self.atomic():
            self.db.execute("DELETE FROM tokens WHERE site = ? AND used_at IS NULL", [token.site])
            self.db["tokens"].insert(token.__dict__)

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self.lock:
            rows = list(self.db["tokens"].rows_where("token_hash = ?", [token_hash]))
        return TokenRecord(**rows[0]) if rows else None

    def mark_token_used(self, token_hash: str, used_at: float) -> None:
        with self.lock:
            self.db["tokens"].update(token_hash, {"used_at": used_at})

    def add_certificate(self, cert: CertificateRecord) -> None:
        with self.lock:
            self.db["certificates"].insert(cert.__dict__)

    def certificates(self) -> list[CertificateRecord]:
        with self.lock:
            return [CertificateRecord(**r) for r in self.db["certificates"].rows]

    def revoke_certificates(self, name: str, role: str, at: float) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE name = ? AND role = ? AND revoked_at IS NULL",
                [at, name, role],
            )
