"""Training jobs and their rounds, in the coordinator's database.

Shared by the coordinator (which starts, stops and resumes jobs) and each job's own
process (which records rounds as they complete); SQLite in WAL mode serializes them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from silolink import errors
from silolink.db import Database, Migrations, SqliteStore

migrations = Migrations("coordinator.training")
STATES = ("running", "completed", "failed", "stopped")


@migrations()
def m001_jobs(db: Database) -> None:
    db["training_jobs"].create(
        {
            "id": str,
            "spec": str,
            "state": str,
            "error": str,
            "model": str,
            "dp_epsilon": float,
            "dp_delta": float,
            "created_by": str,
            "created_at": float,
            "updated_at": float,
            "resumed": int,
            "scaling": str,
        },
        pk="id",
        not_null={"spec", "state", "created_at", "updated_at"},
        defaults={"error": "", "model": "", "resumed": 0},
    )
    db["training_rounds"].create(
        {
            "job_id": str,
            "round": int,
            "participants": str,
            "excluded": str,
            "train_metrics": str,
            "eval_metrics": str,
            "duration_s": float,
        },
        pk=("job_id", "round"),
        foreign_keys=[("job_id", "training_jobs", "id")],
    )


@dataclass(frozen=True)
class JobSpec:
    app: str
    dataset: str
    sites: tuple[str, ...]
    rounds: int
    strategy: str = "fedavg"
    min_sites: int = 2
    round_timeout_s: float = 60.0
    local_epochs: int = 1
    learning_rate: float = 0.1
    proximal_mu: float = 0.0
    server_learning_rate: float = 0.1
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 0.0
    model_name: str = ""
    secure_aggregation: bool = False
    hidden_units: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**{**data, "sites": tuple(data["sites"]), "hidden_units": tuple(data.get("hidden_units", ()))})


@dataclass(frozen=True)
class RoundRecord:
    round: int
    participants: list[str]
    excluded: list[dict[str, str]]
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    duration_s: float


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    state: str
    error: str
    model: str
    dp_epsilon: float | None
    dp_delta: float | None
    created_by: str
    created_at: float
    updated_at: float
    resumed: int
    scaling: dict[str, list[float]] | None
    rounds: list[RoundRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"]["sites"] = list(self.spec.sites)
        data.pop("scaling")
        return data


class JobStore(SqliteStore):
    migrations = migrations

    def create(self, job_id: str, spec: JobSpec, created_by: str) -> Job:
        now = time.time()
        with self.atomic():
            self.db["training_jobs"].insert(
                {
                    "id": job_id,
                    "spec": json.dumps(asdict(spec)),
                    "state": "running",
                    "created_by": created_by,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return self.get(job_id)

    def get(self, job_id: str, with_rounds: bool = True) -> Job:
        with self.lock:
            rows = list(self.db["training_jobs"].rows_where("id = ?", [job_id]))
            if not rows:
                raise errors.NotFound(f"no training job {job_id!r}; `cloud-coordinator train list` shows them")
            rounds = self.rounds(job_id) if with_rounds else []
            return _job(rows[0], rounds)

    def list(self) -> list[Job]:
        with self.lock:
            return [_job(r, []) for r in self.db["training_jobs"].rows_where(order_by="created_at desc")]

    def running(self) -> list[Job]:
        with self.lock:
            return [_job(r, []) for r in self.db["training_jobs"].rows_where("state = 'running'")]

    def rounds(self, job_id: str) -> list[RoundRecord]:
        with self.lock:
            rows = self.db["training_rounds"].rows_where("job_id = ?", [job_id], order_by="round")
            return [
                RoundRecord(
                    round=r["round"],
                    participants=json.loads(r["participants"]),
                    excluded=json.loads(r["excluded"]),
                    train_metrics=json.loads(r["train_metrics"]),
                    eval_metrics=json.loads(r["eval_metrics"]),
                    duration_s=r["duration_s"],
                )
                for r in rows
            ]

    def record_round(self, job_id: str, record: RoundRecord) -> None:
        with self.atomic():
            self._require_running(job_id)
            self.db["training_rounds"].upsert(
                {
                    "job_id": job_id,
                    "round": record.round,
                    "participants": json.dumps(record.participants),
                    "excluded": json.dumps(record.excluded),
                    "train_metrics": json.dumps(record.train_metrics),
                    "eval_metrics": json.dumps(record.eval_metrics),
                    "duration_s": record.duration_s,
                },
                pk=("job_id", "round"),
            )
            self._touch(job_id)

    def set_scaling(self, job_id: str, scaling: dict[str, list[float]]) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"scaling": json.dumps(scaling), "updated_at": time.time()})

    def set_privacy(self, job_id: str, epsilon: float, delta: float) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"dp_epsilon": epsilon, "dp_delta": delta})

    def finish(self, job_id: str, state: str, error: str = "", model: str = "") -> Job:
        """Move a running job to its final state; a job already ended keeps its state."""
        assert state in STATES
        with self.atomic():
            job = self.get(job_id, with_rounds=False)
            if job.state == "running":
                self.db["training_jobs"].update(
                    job_id, {"state": state, "error": error, "model": model, "updated_at": time.time()}
                )
        return self.get(job_id)

    def mark_resumed(self, job_id: str) -> int:
        with self.atomic():
            job = self.get(job_id, with_rounds=False)
            self.db["training_jobs"].update(job_id, {"resumed": job.resumed + 1, "updated_at": time.time()})
            return job.resumed + 1

    def _require_running(self, job_id: str) -> None:
        job = self.get(job_id, with_rounds=False)
        if job.state != "running":
            raise errors.FailedPrecondition(f"job {job_id} is {job.state}")

    def _touch(self, job_id: str) -> None:
        self.db["training_jobs"].update(job_id, {"updated_at": time.time()})


def _job(row: dict[str, Any], rounds: list[RoundRecord]) -> Job:
    return Job(
        id=row["id"],
        spec=JobSpec.from_dict(json.loads(row["spec"])),
        state=row["state"],
        error=row["error"] or "",
        model=row["model"] or "",
        dp_epsilon=row["dp_epsilon"],
        dp_delta=row["dp_delta"],
        created_by=row["created_by"] or "",
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resumed=row["resumed"] or 0,
        scaling=json.loads(row["scaling"]) if row["scaling"] else None,
        rounds=rounds,
    )
