"""Studies, the sites invited to them, what each site gives, and accounts' roles, in SQLite."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from silolink.db import Database, Migrations, SqliteStore

migrations = Migrations("coordinator.studies")
ROLES = ("observer", "analyst", "lead")
STATES = ("invited", "accepted", "left")


@migrations()
def m001_studies(db: Database) -> None:
    db["studies"].create(
        {"name": str, "description": str, "weight": float, "created_by": str, "created_at": float},
        pk="name",
        not_null={"weight", "created_by", "created_at"},
        defaults={"description": ""},
    )
    db["study_sites"].create(
        {
            "study": str,
            "site": str,
            "state": str,
            "invited_by": str,
            "invited_at": float,
            "updated_at": float,
            "share": str,  # the compute the site gives, as JSON (once accepted)
            "budgets": str,  # remaining privacy budgets the site shares, as JSON
        },
        pk=("study", "site"),
        not_null={"state", "invited_at", "updated_at"},
        foreign_keys=[("study", "studies", "name")],
    )
    db["study_sites"].create_index(["site"])
    db["study_members"].create(
        {"study": str, "account": str, "role": str, "granted_by": str, "granted_at": float},
        pk=("study", "account"),
        foreign_keys=[("study", "studies", "name")],
    )


@dataclass(frozen=True)
class StudySite:
    study: str
    site: str
    state: str
    invited_at: float
    updated_at: float
    share: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    weight: float
    created_by: str
    created_at: float
    sites: list[StudySite] = field(default_factory=list)
    members: dict[str, str] = field(default_factory=dict)  # account -> role


def _site(row: dict[str, Any]) -> StudySite:
    return StudySite(
        row["study"],
        row["site"],
        row["state"],
        row["invited_at"],
        row["updated_at"],
        json.loads(row["share"] or "{}"),
        json.loads(row["budgets"] or "[]"),
    )


class StudyStore(SqliteStore):
    migrations = migrations

    def create(self, name: str, description: str, weight: float, actor: str, at: float) -> bool:
        """Add a study and make ``actor`` its lead; False if the name is taken."""
        with self.atomic():
            if self.db["studies"].count_where("name = ?", [name]):
                return False
            self.db["studies"].insert(
                {"name": name, "description": description, "weight": weight, "created_by": actor, "created_at": at}
            )
            if actor:
                self.set_role(name, actor, "lead", actor, at)
            return True

    def exists(self, name: str) -> bool:
        with self.lock:
            return bool(self.db["studies"].count_where("name = ?", [name]))

    def get(self, name: str) -> Study | None:
        with self.lock:
            rows = list(self.db["studies"].rows_where("name = ?", [name]))
            if not rows:
                return None
            sites = [_site(r) for r in self.db["study_sites"].rows_where("study = ?", [name], order_by="site")]
            members = {
                r["account"]: r["role"]
                for r in self.db["study_members"].rows_where("study = ?", [name], order_by="account")
            }
        row = rows[0]
        return Study(
            row["name"], row["description"], row["weight"], row["created_by"], row["created_at"], sites, members
        )

    def names(self) -> list[str]:
        with self.lock:
            return [r["name"] for r in self.db["studies"].rows_where(select="name", order_by="name")]

    def invite(self, study: str, site: str, actor: str, at: float) -> bool:
        """Invite ``site``; False if it already was (a site that left is invited again)."""
        with self.atomic():
            rows = list(self.db["study_sites"].rows_where("study = ? AND site = ?", [study, site]))
            if rows and rows[0]["state"] != "left":
                return False
            self.db["study_sites"].upsert(
                {
                    "study": study,
                    "site": site,
                    "state": "invited",
                    "invited_by": actor,
                    "invited_at": at,
                    "updated_at": at,
                    "share": "{}",
                    "budgets": "[]",
                },
                pk=("study", "site"),
            )
            return True

    def membership(self, study: str, site: str) -> StudySite | None:
        with self.lock:
            rows = list(self.db["study_sites"].rows_where("study = ? AND site = ?", [study, site]))
        return _site(rows[0]) if rows else None

    def of_site(self, site: str) -> list[StudySite]:
        with self.lock:
            return [_site(r) for r in self.db["study_sites"].rows_where("site = ?", [site], order_by="study")]

    def all_memberships(self) -> list[StudySite]:
        with self.lock:
            return [_site(r) for r in self.db["study_sites"].rows_where(order_by="study, site")]

    def answer(self, study: str, site: str, state: str, share: dict[str, Any] | None, at: float) -> None:
        values: dict[str, Any] = {"state": state, "updated_at": at}
        if share is not None:
            values["share"] = json.dumps(share, sort_keys=True)
        if state == "left":
            values["budgets"] = "[]"
        with self.atomic():
            if self.db["study_sites"].count_where("study = ? AND site = ?", [study, site]):
                self.db["study_sites"].update((study, site), values)
            else:  # the default study needs no invitation
                self.db["study_sites"].insert(
                    {"study": study, "site": site, "invited_by": "", "invited_at": at, "share": "{}", "budgets": "[]",
                     **values}
                )  # fmt: skip

    def set_budgets(self, site: str, budgets: dict[str, list[dict[str, Any]]], at: float) -> None:
        """Replace what ``site`` shares of its budgets: studies absent from ``budgets`` are cleared."""
        with self.atomic():
            for membership in self.of_site(site):
                shared = budgets.get(membership.study, [])
                self.db["study_sites"].update(
                    (membership.study, site), {"budgets": json.dumps(shared, sort_keys=True), "updated_at": at}
                )

    def set_role(self, study: str, account: str, role: str | None, actor: str, at: float) -> None:
        with self.atomic():
            if role is None:
                self.db["study_members"].delete_where("study = ? AND account = ?", [study, account])
            else:
                self.db["study_members"].upsert(
                    {"study": study, "account": account, "role": role, "granted_by": actor, "granted_at": at},
                    pk=("study", "account"),
                )

    def role(self, study: str, account: str) -> str | None:
        with self.lock:
            rows = list(self.db["study_members"].rows_where("study = ? AND account = ?", [study, account]))
        return rows[0]["role"] if rows else None
