"""The queue in the coordinator's database, so it survives a restart: queued and placed work."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from silolink.db import Database, Migrations, SqliteStore

from .model import JobNeeds

migrations = Migrations("coordinator.scheduling")


@migrations()
def m001_queue(db: Database) -> None:
    db["scheduling_queue"].create(
        {
            "job_id": str,
            "kind": str,  # which capability launches it (training)
            "study": str,
            "needs": str,  # JobNeeds as JSON
            "state": str,  # queued | running
            "sites": str,  # JSON list, while running
            "submitted_at": float,
            "placed_at": float,
            "dataset": str,  # what the sites are told when offered the job
            "app": str,
        },
        pk="job_id",
        not_null={"kind", "study", "needs", "state", "submitted_at"},
    )


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    kind: str
    needs: JobNeeds
    state: str
    sites: list[str]
    submitted_at: float
    placed_at: float | None
    dataset: str = ""
    app: str = ""


def needs_to_json(needs: JobNeeds) -> str:
    data = asdict(needs)
    data["sites"] = list(needs.sites) if needs.sites is not None else None
    return json.dumps(data, sort_keys=True)


def needs_from_json(text: str) -> JobNeeds:
    data: dict[str, Any] = json.loads(text)
    if data.get("sites") is not None:
        data["sites"] = tuple(data["sites"])
    return JobNeeds(**data)


class QueueStore(SqliteStore):
    migrations = migrations

    def add(self, kind: str, needs: JobNeeds, dataset: str = "", app: str = "") -> None:
        with self.lock:
            self.db["scheduling_queue"].insert(
                {
                    "job_id": needs.id,
                    "kind": kind,
                    "study": needs.study,
                    "needs": needs_to_json(needs),
                    "state": "queued",
                    "sites": "[]",
                    "submitted_at": needs.submitted_at,
                    "dataset": dataset,
                    "app": app,
                },
                replace=True,
            )

    def placed(self, job_id: str, sites: list[str], at: float) -> None:
        with self.lock:
            self.db["scheduling_queue"].update(
                job_id, {"state": "running", "sites": json.dumps(sites), "placed_at": at}
            )

    def requeued(self, job_id: str) -> None:
        with self.lock:
            self.db["scheduling_queue"].update(job_id, {"state": "queued", "sites": "[]", "placed_at": None})

    def remove(self, job_id: str) -> None:
        with self.lock:
            self.db["scheduling_queue"].delete_where("job_id = ?", [job_id])

    def entries(self) -> list[QueueEntry]:
        with self.lock:
            rows = list(self.db["scheduling_queue"].rows_where(order_by="submitted_at"))
        return [
            QueueEntry(r["job_id"], r["kind"], needs_from_json(r["needs"]), r["state"], json.loads(r["sites"]),
                       r["submitted_at"], r["placed_at"], r["dataset"] or "", r["app"] or "")
            for r in rows
        ]  # fmt: skip
