"""What a site allows one study, and the site's record of the studies it accepted or left.

The allowance is the site's decision, kept at the site (``studies`` table in the agent's
state database); the coordinator learns only the compute share (to schedule) and, if the
allowance says so, what remains of the privacy budgets.

The ``default`` study needs no allowance: work that names no study is governed by
``agent.toml`` alone, as before studies existed. A site may leave it, and then refuses
such work; it may also accept it again with an allowance, which then narrows it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from silolink import errors
from silolink import windows as win
from silolink.analytics.query import STATISTIC_NAMES
from silolink.db import Database, Migrations, SqliteStore
from silolink.studies import DEFAULT

from ..privacy import Budget

migrations = Migrations("agent.studies")
QUERY_KINDS = tuple(sorted(set(STATISTIC_NAMES.values())))
GIB = 1024**3


@migrations()
def m001_studies(db: Database) -> None:
    db["studies"].create(
        {"study": str, "state": str, "allowance": str, "updated_at": float},
        pk="study",
        not_null={"state", "updated_at"},
    )


@migrations()
def m002_agreement_studies(db: Database) -> None:
    # The study of each agreement this site accepted, so an envelope is opened only while the
    # site is still in that study.
    db["agreement_studies"].create(
        {"agreement_id": str, "sender": str, "purpose": str, "study": str}, pk="agreement_id", not_null={"study"}
    )
    db["agreement_studies"].create_index(["sender", "purpose"])


@dataclass(frozen=True)
class Share:
    """The compute this site gives the study (what the coordinator's scheduler sees)."""

    max_jobs: int = 1
    cpu: float = 1.0
    memory_bytes: int = 4 * GIB
    gpus: int = 0
    windows: tuple[str, ...] = ()
    utc_offset_s: int = 0
    cpu_hours_per_day: float = 0.0

    def __post_init__(self) -> None:
        if self.max_jobs < 0 or self.gpus < 0 or self.memory_bytes < 0:
            raise errors.InvalidArgument("a study's share of jobs, memory and GPUs cannot be negative")
        for name in ("cpu", "cpu_hours_per_day"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise errors.InvalidArgument(f"a study's {name} must be a finite number >= 0")
        if not -14 * 3600 <= self.utc_offset_s <= 14 * 3600:
            raise errors.InvalidArgument("the site's UTC offset must be within 14 hours")
        win.parse_windows(self.windows)  # InvalidArgument naming a bad window


@dataclass(frozen=True)
class Allowance:
    """What this site allows one study: data, apps, query kinds, privacy and compute."""

    datasets: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    query_kinds: tuple[str, ...] = ()
    min_cohort: int = 0
    epsilon_budget: float = 0.0
    delta_budget: float = 1e-5
    query_epsilon: float = 0.0
    share_budget: bool = False
    models: bool = False
    exchange: bool = False
    share: Share = field(default_factory=Share)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.query_kinds) - set(QUERY_KINDS))
        if unknown:
            raise errors.InvalidArgument(f"query kinds {', '.join(unknown)}: use {', '.join(QUERY_KINDS)}")
        if self.min_cohort < 0 or self.min_cohort > 10**9:
            raise errors.InvalidArgument("the minimum cohort must be between 0 and 1,000,000,000")
        for name in ("epsilon_budget", "query_epsilon"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise errors.InvalidArgument(f"{name.replace('_', ' ')} must be a finite number >= 0")
        if not 0 <= self.delta_budget < 1:
            raise errors.InvalidArgument("the delta budget must be in [0, 1)")
        if self.epsilon_budget and self.query_epsilon > self.epsilon_budget:
            raise errors.InvalidArgument("one query's epsilon cannot exceed the study's whole budget")

    @property
    def budget(self) -> Budget | None:
        """The privacy budget per dataset, if the study has one here."""
        return Budget(self.epsilon_budget, self.delta_budget) if self.epsilon_budget > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Allowance:
        data = dict(data)
        share = Share(**{**data.pop("share", {}), "windows": tuple(data.get("share", {}).get("windows", ()))})
        tuples = {k: tuple(data.get(k, ())) for k in ("datasets", "apps", "query_kinds")}
        return cls(**{**data, **tuples, "share": share})


@dataclass(frozen=True)
class Membership:
    study: str
    state: str  # accepted | left
    allowance: Allowance | None  # None: the default study, governed by agent.toml alone
    updated_at: float


class StudyBook(SqliteStore):
    """The studies this site accepted or left, with its allowance for each."""

    migrations = migrations

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db)
        self._clock = clock

    def get(self, study: str) -> Membership:
        """This site's standing in ``study``; the default study is accepted until left."""
        with self.lock:
            rows = list(self.db["studies"].rows_where("study = ?", [study]))
        if not rows:
            if study == DEFAULT:
                return Membership(DEFAULT, "accepted", None, 0.0)
            return Membership(study, "none", None, 0.0)
        row = rows[0]
        allowance = Allowance.from_dict(json.loads(row["allowance"])) if row["allowance"] else None
        return Membership(row["study"], row["state"], allowance, row["updated_at"])

    def all(self) -> list[Membership]:
        with self.lock:
            names = [r["study"] for r in self.db["studies"].rows_where(select="study", order_by="study")]
        if DEFAULT not in names:
            names.insert(0, DEFAULT)
        return [self.get(n) for n in names]

    def accept(self, study: str, allowance: Allowance | None) -> Membership:
        allowance_json = json.dumps(allowance.to_dict(), sort_keys=True) if allowance is not None else ""
        with self.atomic():
            self.db["studies"].upsert(
                {"study": study, "state": "accepted", "allowance": allowance_json, "updated_at": self._clock()},
                pk="study",
            )
        return self.get(study)

    def record_agreement(self, agreement_id: str, sender: str, purpose: str, study: str) -> None:
        with self.atomic():
            self.db["agreement_studies"].upsert(
                {"agreement_id": agreement_id, "sender": sender, "purpose": purpose, "study": study},
                pk="agreement_id",
            )

    def agreement_studies(self, sender: str, purpose: str) -> set[str]:
        """The studies of the agreements this site accepted for ``sender`` and ``purpose``."""
        with self.lock:
            rows = self.db["agreement_studies"].rows_where("sender = ? AND purpose = ?", [sender, purpose])
            return {r["study"] for r in rows}

    def leave(self, study: str) -> Membership:
        current = self.get(study)
        allowance_json = json.dumps(current.allowance.to_dict(), sort_keys=True) if current.allowance else ""
        with self.atomic():
            self.db["studies"].upsert(
                {"study": study, "state": "left", "allowance": allowance_json, "updated_at": self._clock()}, pk="study"
            )
        return self.get(study)
