"""The site's privacy ledger: every epsilon a dataset gave away, per study, append-only.

One SQLite file (``privacy.db`` in the agent's data directory). Each spend is a row naming
the study, the dataset, the work behind it (a query id or a training job id), the mechanism
and its epsilon and delta. Triggers refuse every UPDATE and DELETE of a spend, so no code
path (nor an admin with the sqlite3 shell who forgets) can make the site forget what it
spent. A spend is checked against the study's budget for that dataset and written in one
transaction, so two queries at once cannot both take the last of a budget.

DP training jobs also keep a small, mutable record beside the ledger: the parameters the
site accepted and how many rounds it has answered, so a coordinator cannot get more rounds,
or rounds with less noise, than the site agreed to and paid for.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.db import Database, Migrations, SqliteStore, open_database

from .accounting import gaussian_epsilon, laplace_epsilon

migrations = Migrations("agent.privacy")
KINDS = ("query", "training")
# Sums of floats: a spend that lands within this of the budget still fits.
_SLACK = 1e-9


@migrations()
def m001_ledger(db: Database) -> None:
    db["privacy_spends"].create(
        {
            "seq": int,
            "at": float,
            "study": str,
            "dataset": str,
            "kind": str,
            "work_id": str,
            "mechanism": str,
            "epsilon": float,
            "delta": float,
            "detail": str,
        },
        pk="seq",
        not_null={"at", "study", "dataset", "kind", "work_id", "mechanism", "epsilon", "delta"},
    )
    db["privacy_spends"].create_index(["study", "dataset"])
    # One spend per piece of work: a retried query or a resumed job is never charged twice.
    db["privacy_spends"].create_index(["kind", "work_id", "study", "dataset"], unique=True)
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER privacy_spends_no_{action.lower()} BEFORE {action} ON privacy_spends "
            "BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END"
        )
    db["dp_training_jobs"].create(
        {
            "job_id": str,
            "study": str,
            "dataset": str,
            "noise_multiplier": float,
            "rounds": int,
            "delta": float,
            "answered": int,
        },
        pk="job_id",
        not_null={"study", "dataset", "noise_multiplier", "rounds", "delta", "answered"},
    )


@dataclass(frozen=True)
class Budget:
    """What a study may spend on one dataset at this site: epsilon and delta in total."""

    epsilon: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)) or not 0 <= self.delta < 1:
            raise errors.InvalidArgument("a privacy budget needs epsilon > 0 and delta between 0 and 1")


@dataclass(frozen=True)
class Spend:
    seq: int
    at: float
    study: str
    dataset: str
    kind: str
    work_id: str
    mechanism: str
    epsilon: float
    delta: float
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Balance:
    """What one study has spent, and has left, on one dataset."""

    study: str
    dataset: str
    spends: int
    epsilon_spent: float
    delta_spent: float
    budget: Budget | None

    @property
    def epsilon_left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget.epsilon - self.epsilon_spent)

    @property
    def delta_left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget.delta - self.delta_spent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "dataset": self.dataset,
            "spends": self.spends,
            "epsilon_spent": self.epsilon_spent,
            "delta_spent": self.delta_spent,
            "epsilon_budget": None if self.budget is None else self.budget.epsilon,
            "delta_budget": None if self.budget is None else self.budget.delta,
            "epsilon_left": self.epsilon_left,
            "delta_left": self.delta_left,
        }


def ledger_path(data_dir: Path) -> Path:
    return Path(data_dir) / "privacy.db"


class PrivacyLedger(SqliteStore):
    migrations = migrations

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db)
        self._clock = clock

    @classmethod
    def open(cls, path: Path | None, clock: Callable[[], float] = time.time) -> PrivacyLedger:
        return cls(open_database(path), clock)

    # --- reading ------------------------------------------------------------------------

    def balance(self, study: str, dataset: str, budget: Budget | None) -> Balance:
        with self.lock:
            row = self.db.execute(
                "SELECT count(*), coalesce(sum(epsilon), 0), coalesce(sum(delta), 0) FROM privacy_spends "
                "WHERE study = ? AND dataset = ?",
                [study, dataset],
            ).fetchone()
        return Balance(study, dataset, row[0], row[1], row[2], budget)

    def spends(self, study: str | None = None, dataset: str | None = None) -> list[Spend]:
        where, args = [], []
        if study:
            where.append("study = ?")
            args.append(study)
        if dataset:
            where.append("dataset = ?")
            args.append(dataset)
        with self.lock:
            rows = list(self.db["privacy_spends"].rows_where(" AND ".join(where) or None, args, order_by="seq"))
        return [Spend(**{**r, "detail": json.loads(r["detail"] or "{}")}) for r in rows]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (study, dataset) with a spend."""
        with self.lock:
            rows = self.db.execute("SELECT DISTINCT study, dataset FROM privacy_spends ORDER BY study, dataset")
            return [(r[0], r[1]) for r in rows]

    # --- spending -----------------------------------------------------------------------

    def spend(
        self,
        *,
        study: str,
        dataset: str,
        kind: str,
        work_id: str,
        mechanism: str,
        epsilon: float,
        delta: float,
        budget: Budget | None,
        detail: dict[str, Any] | None = None,
    ) -> Spend:
        """Record a spend if the budget holds it; ResourceExhausted saying what is left if not.

        With no budget (a study that keeps none here) the spend is only recorded."""
        if kind not in KINDS:
            raise errors.InvalidArgument(f"a privacy spend is for a query or a training job, not {kind!r}")
        if not (epsilon >= 0 and math.isfinite(epsilon)) or not 0 <= delta < 1:
            raise errors.InvalidArgument("a privacy spend needs a finite epsilon >= 0 and a delta in [0, 1)")
        with self.atomic():
            if self._recorded(kind, work_id, study, dataset):
                raise errors.AlreadyExists(
                    f"{kind} {work_id} has already spent privacy budget on {dataset!r} for study {study!r}"
                )
            balance = self.balance(study, dataset, budget)
            left_eps, left_delta = balance.epsilon_left or 0.0, balance.delta_left or 0.0
            if budget is not None and (epsilon > left_eps + _SLACK or delta > left_delta + _SLACK):
                raise errors.ResourceExhausted(
                    f"this {kind} would overspend the privacy budget of study {study!r} for dataset {dataset!r} "
                    f"at this site: it needs epsilon {epsilon:.4g} (delta {delta:.3g}); epsilon {left_eps:.4g} "
                    f"of {budget.epsilon:.4g} remains (delta {left_delta:.3g} of {budget.delta:.3g})"
                )
            seq = (
                self.db["privacy_spends"]
                .insert(
                    {
                        "at": self._clock(),
                        "study": study,
                        "dataset": dataset,
                        "kind": kind,
                        "work_id": work_id,
                        "mechanism": mechanism,
                        "epsilon": epsilon,
                        "delta": delta,
                        "detail": json.dumps(detail or {}, sort_keys=True),
                    }
                )
                .last_pk
            )
        return self.spends_by_seq(seq)

    def spends_by_seq(self, seq: int) -> Spend:
        with self.lock:
            row = self.db["privacy_spends"].get(seq)
        return Spend(**{**row, "detail": json.loads(row["detail"] or "{}")})

    def _recorded(self, kind: str, work_id: str, study: str, dataset: str) -> bool:
        return bool(
            self.db.execute(
                "SELECT 1 FROM privacy_spends WHERE kind = ? AND work_id = ? AND study = ? AND dataset = ?",
                [kind, work_id, study, dataset],
            ).fetchone()
        )

    def spend_query(
        self, *, study: str, dataset: str, query_id: str, epsilon: float, budget: Budget | None, statistic: str
    ) -> Spend:
        """A noised answer of ``epsilon``: Laplace, composed by adding epsilons."""
        return self.spend(
            study=study,
            dataset=dataset,
            kind="query",
            work_id=query_id,
            mechanism="laplace",
            epsilon=laplace_epsilon(epsilon),
            delta=0.0,
            budget=budget,
            detail={"statistic": statistic},
        )

    def answer_training_round(
        self,
        *,
        study: str,
        dataset: str,
        job_id: str,
        noise_multiplier: float,
        rounds: int,
        delta: float,
        budget: Budget | None,
    ) -> Spend | None:
        """Let one more training round of a DP job use the dataset, or refuse saying why.

        The first round of a job pays for every round it declares, at once (the RDP epsilon
        of ``rounds`` Gaussian releases): a job the budget cannot hold whole is refused before
        it has learnt anything. Later rounds must carry the same parameters and may not go
        beyond the rounds paid for. Returns the spend on a job's first round, else None.
        """
        # Worked out before the write lock: the accountant's first use imports scipy (seconds).
        epsilon = None if self._paid(job_id) else gaussian_epsilon(noise_multiplier, rounds, delta)
        with self.atomic():
            row = self._paid(job_id)
            if row is None:
                if epsilon is None:  # the record vanished between the two looks: cannot happen (append-only)
                    epsilon = gaussian_epsilon(noise_multiplier, rounds, delta)
                spend = self.spend(
                    study=study,
                    dataset=dataset,
                    kind="training",
                    work_id=job_id,
                    mechanism="gaussian-rdp",
                    epsilon=epsilon,
                    delta=delta,
                    budget=budget,
                    detail={"noise_multiplier": noise_multiplier, "rounds": rounds},
                )
                self.db["dp_training_jobs"].insert(
                    {
                        "job_id": job_id,
                        "study": study,
                        "dataset": dataset,
                        "noise_multiplier": noise_multiplier,
                        "rounds": rounds,
                        "delta": delta,
                        "answered": 1,
                    }
                )
                return spend
            paid = dict(zip(("study", "dataset", "noise_multiplier", "rounds", "delta", "answered"), row, strict=True))
            if (paid["study"], paid["dataset"]) != (study, dataset) or paid["noise_multiplier"] > noise_multiplier:
                raise errors.PermissionDenied(
                    f"job {job_id} changed its study, dataset or noise since this site accepted it "
                    f"(noise multiplier {paid['noise_multiplier']:g} on {paid['dataset']!r} for study "
                    f"{paid['study']!r}); start a new job"
                )
            if paid["answered"] >= paid["rounds"]:
                raise errors.ResourceExhausted(
                    f"job {job_id} has had the {paid['rounds']} DP round(s) this site paid for on {dataset!r}; "
                    "it gets no more"
                )
            self.db.execute("UPDATE dp_training_jobs SET answered = answered + 1 WHERE job_id = ?", [job_id])
        return None

    def _paid(self, job_id: str) -> tuple | None:
        with self.lock:
            return self.db.execute(
                "SELECT study, dataset, noise_multiplier, rounds, delta, answered FROM dp_training_jobs "
                "WHERE job_id = ?",
                [job_id],
            ).fetchone()

    def training_jobs(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db["dp_training_jobs"].rows_where(order_by="job_id"))
