"""Operator accounts in the coordinator's database: name, role, state, setup code hash,
console password hash (argon2) and TOTP secret."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from silolink.db import Migrations, SqliteStore

migrations = Migrations("coordinator.accounts")


@migrations()
def m001_accounts(db) -> None:
    db["accounts"].create(
        {
            "name": str,
            "role": str,
            "created_at": float,
            "created_by": str,
            "disabled_at": float,
            # sha256 of the one-time setup code; NULL once redeemed or never issued.
            "setup_hash": str,
            "setup_expires_at": float,
            "set_up_at": float,
            "password_hash": str,  # argon2id, as argon2-cffi encodes it
            "totp_secret": str,
            "last_login_at": float,
        },
        pk="name",
        not_null={"role", "created_at", "created_by"},
    )
    db["accounts"].create_index(["setup_hash"])
    # Data directories from before accounts: each operator certificate already issued
    # (``init`` made one, named "admin") becomes an admin account, so nothing stops working.
    if "certificates" in db.table_names():
        now = time.time()
        for row in db.query("SELECT DISTINCT name FROM certificates WHERE role = 'operator' AND revoked_at IS NULL"):
            db["accounts"].insert(
                {"name": row["name"], "role": "admin", "created_at": now, "created_by": "coordinator", "set_up_at": now}
            )


@dataclass(frozen=True)
class AccountRecord:
    """One account as stored."""

    name: str
    role: str
    created_at: float
    created_by: str
    disabled_at: float | None = None
    setup_hash: str | None = None
    setup_expires_at: float | None = None
    set_up_at: float | None = None
    password_hash: str | None = None
    totp_secret: str | None = None
    last_login_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class AccountStore(SqliteStore):
    """Accounts in SQLite. Callers group writes with ``atomic()``."""

    migrations = migrations

    def add(self, account: AccountRecord) -> None:
        with self.lock:
            self.db["accounts"].insert(account.__dict__)

    def get(self, name: str) -> AccountRecord | None:
        with self.lock:
            rows = list(self.db["accounts"].rows_where("name = ?", [name]))
        return AccountRecord(**rows[0]) if rows else None

    def by_setup_hash(self, setup_hash: str) -> AccountRecord | None:
        with self.lock:
            rows = list(self.db["accounts"].rows_where("setup_hash = ?", [setup_hash]))
        return AccountRecord(**rows[0]) if rows else None

    def list(self) -> list[AccountRecord]:
        with self.lock:
            return [AccountRecord(**r) for r in self.db["accounts"].rows_where(order_by="name")]

    def update(self, name: str, **values: Any) -> None:
        with self.lock:
            self.db["accounts"].update(name, values)
