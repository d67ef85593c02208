"""Imaging end to end: DICOM scans (scikit-learn's digits as stand-in images, written with
pydicom) registered in place at two hospitals, a Flower ClientApp trained federated on
their pixels, the model exported to ONNX, rolled out, and every scan scored at the sites."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="pydicom is in the [sources] extra (pip install -e '.[dev]')")

from cloud_coordinator.apps.client import AppsClient  # noqa: E402
from cloud_coordinator.registry.client import RegistryClient  # noqa: E402
from edge_agent.apps.install import install_bundle  # noqa: E402
from edge_agent.apps.store import AppStore  # noqa: E402
from edge_agent.catalog.sources import add_source  # noqa: E402
from edge_agent.inference.table import score_table  # noqa: E402
from edge_agent.models.store import ModelStore  # noqa: E402
from silolink.apps.fab import FabLimits, build_fab  # noqa: E402
from silolink.config import TrainingConfig  # noqa: E402
from silolink_demo.imaging_data import dicom_folder, digits  # noqa: E402
from tests import support  # noqa: E402

HOSPITALS = {"hospital-a": (0, 500), "hospital-b": (500, 500)}
APP = Path(__file__).resolve().parents[2] / "examples" / "imaging-app"


def test_dicom_scans_train_roll_out_and_score_at_two_hospitals(coordinator, make_agent, tmp_path):
    agents = {}
    for name, (offset, count) in HOSPITALS.items():
        agent = make_agent(name, training=TrainingConfig(datasets=("scans",)))
        # The site admin approves the imaging app's exact bundle (edge-agent apps install DIR).
        install_bundle(
            AppStore.open(agent.layout.state_db, agent.layout.apps_dir), build_fab(APP), "local", FabLimits()
        )
        images, labels = digits(count, offset)
        folder = dicom_folder(tmp_path / f"{name}-pacs", images, labels)
        dataset = add_source(agent.catalog, "scans", str(folder))
        assert dataset.kind == "dicom" and dataset.row_count == count and dataset.label == "label"
        agents[name] = (agent, labels)
    with support.operator(coordinator) as client:
        AppsClient(client).push(APP)
        job = client.start_training(
            app="imaging", dataset="scans", sites=["kind=hospital"], model_name="digit-scans",
            run_config={"num-server-rounds": 4, "local-epochs": 3},
        )  # fmt: skip
        support.wait_for(
            lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), 120, "the imaging job"
        )
        job = client.get_job(job["job"])
        assert job["state"] == "completed", job["error"]
        assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.85
        name, version = job["model"].split(":")
        registry = RegistryClient(client)
        registry.rollout(name, version, ["kind=hospital"])
        support.wait_for(lambda: all(s["state"] == "active" for s in registry.status(name, version)), 30, "rollout")
    for site, (agent, labels) in agents.items():
        models = ModelStore.open(agent.layout.state_db, agent.layout.model_blobs)
        result = score_table(agent.catalog, models, "scans", name, None, "scan_scores")
        assert result.rows == len(labels) and result.columns[0] == "file"
        with sqlite3.connect(agent.layout.catalog_db) as conn:
            predicted = dict(conn.execute("SELECT file, label FROM scan_scores").fetchall())
        files = [f"scan-{i:04d}.dcm" for i in range(len(labels))]
        accuracy = np.mean([predicted[f] == label for f, label in zip(files, labels, strict=True)])
        assert accuracy > 0.85, (site, accuracy)
