"""Rows never leave a site: unique markers planted in the hospitals' datasets appear nowhere
in the coordinator's files, database or logs after catalog, training and inference flows."""

from __future__ import annotations

import logging
import uuid

from edge_agent.catalog.store import Catalog
from silolink.config import TrainingConfig
from silolink_demo import datasets
from tests import support
from tests.integration.test_exchange_markers import leaks


def test_markers_in_site_rows_never_reach_the_coordinator(coordinator, make_agent, tmp_path):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    markers = []
    try:
        _, parts = datasets.breast_cancer_splits(["hospital-a", "hospital-b"])
        for name in ("hospital-a", "hospital-b"):
            agent = make_agent(name, training=TrainingConfig(datasets=("patients",)))
            marker = f"MARKER-{uuid.uuid4().hex}"
            markers.append(marker.encode())
            source = datasets.write_csv(tmp_path / f"{name}.csv", parts[name])
            lines = source.read_text().splitlines()
            # A free-text note and the patient ids carry the marker in every row.
            rows = [lines[0] + ",note"] + [
                f"{marker}-{i}," + line.split(",", 1)[1] + f",{marker}" for i, line in enumerate(lines[1:])
            ]
            source.write_text("\n".join(rows) + "\n")
            Catalog.open(agent.layout.catalog_db).import_csv(
                source, "patients", label="diagnosis", id_column="patient_id"
            )
        with support.operator(coordinator) as client:
            described = client.list_site_datasets("hospital-a")
            job = client.start_training(
                app="tabular", dataset="patients", sites=["kind=hospital"], rounds=2, round_timeout_s=20
            )
            support.wait_for(
                lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), 60, "the job to end"
            )
            assert client.get_job(job["job"])["state"] == "completed"
        assert "note" in [c["name"] for c in described["datasets"][0]["columns"]]
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    assert leaks(coordinator.layout.root, markers, "\n".join(records).encode()) == []
    assert any("training" in line or "job" in line for line in records)
    # The scan does find the markers where they belong: in each site's own catalog.
    assert leaks(tmp_path / "hospital-a", markers[:1], b"")
