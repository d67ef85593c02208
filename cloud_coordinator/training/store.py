"""Training jobs and their rounds, in the coordinator's database.

Only the coordinator writes here: a job's own process reports its rounds, checkpoints and
end through the coordinator's JobRunnerService, so a job process whose coordinator died
cannot leave a wrong state behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from silolink import errors
from silolink.db import Database, Migrations, SqliteStore

migrations = Migrations("coordinator.training")
STATES = ("queued", "running", "completed", "failed", "stopped")
FINAL = ("completed", "failed", "stopped")


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


@migrations()
def m002_apps(db: Database) -> None:
    """Jobs run published apps: which version and bundle, with what run_config."""
    db["training_jobs"].add_column("app_version", str, not_null_default="")
    db["training_jobs"].add_column("app_sha256", str, not_null_default="")
    db["training_jobs"].add_column("run_config", str, not_null_default="{}")
    db["training_jobs"].add_column("resumed_from_round", int, not_null_default=0)
    db["training_jobs"].add_column("published_models", str, not_null_default="[]")
    db["training_rounds"].add_column("server_metrics", str, not_null_default="{}")


@migrations()
def m003_queue(db: Database) -> None:
    """Jobs wait in the work queue first; a placed job runs on exactly the sites it was given."""
    db["training_jobs"].add_column("placed_sites", str, not_null_default="[]")


@dataclass(frozen=True)
class JobSpec:
    """What the operator asked for. The settings from ``rounds`` to ``hidden_units`` are
    run_config overrides of the built-in tabular app's flags: zero or empty means "not
    given" (the app's own default applies)."""

    app: str
    dataset: str
    sites: tuple[str, ...]
    rounds: int = 0
    strategy: str = ""
    min_sites: int = 0
    round_timeout_s: float = 0.0
    local_epochs: int = 0
    learning_rate: float = 0.0
    proximal_mu: float = 0.0
    server_learning_rate: float = 0.0
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 0.0
    model_name: str = ""
    secure_aggregation: bool = False
    hidden_units: tuple[int, ...] = ()
    app_version: str = ""
    run_config: dict[str, Any] = field(default_factory=dict)  # the operator's overrides
    timeout_s: float = 0.0  # 0: the coordinator's default
    # The study, and what the job needs at each site (zero: not declared; see JobService.needs).
    study: str = ""
    cpu: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0
    expected_duration_s: float = 0.0
    priority: int = 0
    max_sites: int = 0
    # DP declared by an app of the user's (the built-in tabular app declares its own).
    privacy_noise_multiplier: float = 0.0
    privacy_rounds: int = 0
    privacy_delta: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        return cls(**{**data, "sites": tuple(data["sites"]), "hidden_units": tuple(data.get("hidden_units", ()))})


@dataclass(frozen=True)
class RoundRecord:
    round: int
    participants: list[str]
    excluded: list[dict[str, str]]
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    duration_s: float
    server_metrics: dict[str, float] = field(default_factory=dict)


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
    app_version: str = ""
    app_sha256: str = ""
    run_config: dict[str, Any] = field(default_factory=dict)  # effective: defaults + overrides
    resumed_from_round: int = 0
    published_models: list[str] = field(default_factory=list)
    placed_sites: list[str] = field(default_factory=list)  # where the queue placed it
    # While queued (from the work queue, not stored here): its place, 1 next, and why it waits.
    queue_position: int = 0
    queue_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"]["sites"] = list(self.spec.sites)
        data.pop("scaling")
        return data


class JobStore(SqliteStore):
    migrations = migrations

    def create(
        self, job_id: str, spec: JobSpec, created_by: str, app_version: str, app_sha256: str, run_config: dict
    ) -> Job:
        now = time.time()
        with self.atomic():
            self.db["training_jobs"].insert(
                {
                    "id": job_id,
                    "spec": json.dumps(asdict(spec)),
                    "state": "queued",
                    "created_by": created_by,
                    "created_at": now,
                    "updated_at": now,
                    "app_version": app_version,
                    "app_sha256": app_sha256,
                    "run_config": json.dumps(run_config),
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

    def page(self, state: str, dataset: str, offset: int, limit: int | None) -> tuple[list[Job], int, dict[str, int]]:
        """Jobs (newest first) in ``state`` on ``dataset`` (empty: any), ``limit`` from
        ``offset``; with how many match and how many jobs are in each state."""
        where, args = [], []
        if state:
            where.append("state = ?")
            args.append(state)
        if dataset:
            where.append("json_extract(spec, '$.dataset') = ?")
            args.append(dataset)
        clause = " WHERE " + " AND ".join(where) if where else ""
        with self.lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM training_jobs{clause}", args).fetchone()[0]
            rows = self.db.query(
                f"SELECT * FROM training_jobs{clause} ORDER BY created_at DESC LIMIT ? OFFSET ?",
                [*args, -1 if limit is None else limit, offset],
            )
            jobs = [_job(r, []) for r in rows]
            counts = dict(self.db.execute("SELECT state, COUNT(*) FROM training_jobs GROUP BY state").fetchall())
        return jobs, total, counts

    def running(self) -> list[Job]:
        with self.lock:
            return [_job(r, []) for r in self.db["training_jobs"].rows_where("state = 'running'")]

    def queued(self) -> list[Job]:
        with self.lock:
            return [_job(r, []) for r in self.db["training_jobs"].rows_where("state = 'queued'")]

    def placed(self, job_id: str, sites: list[str]) -> Job:
        """The queue placed a queued job on ``sites``: it runs now. FailedPrecondition if it is
        no longer queued (stopped while its sites were being asked)."""
        with self.atomic():
            job = self.get(job_id, with_rounds=False)
            if job.state != "queued":
                raise errors.FailedPrecondition(f"job {job_id} is {job.state}, not queued")
            self.db["training_jobs"].update(
                job_id, {"state": "running", "placed_sites": json.dumps(sites), "updated_at": time.time()}
            )
        return self.get(job_id, with_rounds=False)

    def set_placed_sites(self, job_id: str, sites: list[str]) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"placed_sites": json.dumps(sites)})

    def delete_unstarted(self, job_id: str) -> None:
        """Forget a job the queue refused at once (it never ran: no rounds, no files)."""
        with self.atomic():
            self.db.execute("DELETE FROM training_jobs WHERE id = ? AND state = 'queued'", [job_id])

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
                    server_metrics=json.loads(r["server_metrics"] or "{}"),
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
                    "server_metrics": json.dumps(record.server_metrics),
                },
                pk=("job_id", "round"),
            )
            self._touch(job_id)

    def drop_rounds_after(self, job_id: str, round_: int) -> None:
        """Forget rounds past ``round_`` (a resumed run does them again)."""
        with self.atomic():
            self.db.execute("delete from training_rounds where job_id = ? and round > ?", [job_id, round_])

    def set_resumed_from(self, job_id: str, round_: int) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"resumed_from_round": round_, "updated_at": time.time()})

    def add_published_model(self, job_id: str, model: str) -> None:
        with self.atomic():
            job = self.get(job_id, with_rounds=False)
            models = [*job.published_models, model]
            self.db["training_jobs"].update(
                job_id, {"published_models": json.dumps(models), "model": model, "updated_at": time.time()}
            )

    def set_scaling(self, job_id: str, scaling: dict[str, list[float]]) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"scaling": json.dumps(scaling), "updated_at": time.time()})

    def set_privacy(self, job_id: str, epsilon: float, delta: float) -> None:
        with self.atomic():
            self.db["training_jobs"].update(job_id, {"dp_epsilon": epsilon, "dp_delta": delta})

    def finish(self, job_id: str, state: str, error: str = "", model: str = "") -> Job:
        """Move a queued or running job to its final state; a job already ended keeps its state.

        ``model`` (when given) becomes the job's model; otherwise it keeps the last model
        its ServerApp published.
        """
        assert state in STATES
        with self.atomic():
            job = self.get(job_id, with_rounds=False)
            if job.state not in FINAL:
                values = {"state": state, "error": error, "updated_at": time.time()}
                if model:
                    values["model"] = model
                self.db["training_jobs"].update(job_id, values)
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
        app_version=row.get("app_version") or "",
        app_sha256=row.get("app_sha256") or "",
        run_config=json.loads(row.get("run_config") or "{}"),
        resumed_from_round=row.get("resumed_from_round") or 0,
        published_models=json.loads(row.get("published_models") or "[]"),
        placed_sites=json.loads(row.get("placed_sites") or "[]"),
    )
