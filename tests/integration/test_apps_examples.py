"""The example apps in examples/, unchanged, end to end: the operator pushes the app, each
hospital's admin approves the signed bundle from the coordinator, and `train start --app`
runs the app's own ServerApp in the coordinator's job process against the real agents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloud_coordinator.apps.client import AppsClient as OperatorApps
from edge_agent.apps.approve import approve
from edge_agent.apps.client import AppsClient
from edge_agent.apps.install import limits_of
from edge_agent.apps.store import AppStore
from edge_agent.catalog.store import Catalog
from silolink.config import TrainingConfig
from silolink_demo import datasets
from tests import support
from tests.e2e.test_cli import cli
from tests.flower_app_builders import EXAMPLES

HOSPITALS = ["hospital-a", "hospital-b"]


@pytest.fixture
def hospitals(make_agent, tmp_path):
    """Two hospitals holding their share of the breast-cancer patients, allowing training on them."""
    _, parts = datasets.breast_cancer_splits(HOSPITALS)
    agents = []
    for name in HOSPITALS:
        agent = make_agent(name, training=TrainingConfig(datasets=("patients",)))
        source = datasets.write_csv(tmp_path / f"{name}.csv", parts[name])
        Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="diagnosis", id_column="patient_id")
        agents.append(agent)
    return agents


def push_and_approve(coordinator, agents, example: str) -> dict:
    """Push the example to the coordinator and approve it at every site, as their admins would."""
    with support.operator(coordinator) as op:
        pushed = OperatorApps(op).push(EXAMPLES / example)
    for agent in agents:
        store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
        with AppsClient(agent.layout, agent.config) as client:
            app, new = approve(store, client, agent.layout.ca_cert.read_bytes(), pushed["name"], pushed["version"],
                               limits_of(agent.config.apps))  # fmt: skip
        assert new and app.sha256 == pushed["sha256"]
    return pushed


def run_example(coordinator, agents, example: str, timeout_s: float = 120, **run_config) -> dict:
    """Push the example, approve it at every site, run it; the finished job."""
    pushed = push_and_approve(coordinator, agents, example)
    with support.operator(coordinator) as client:
        job = client.start_training(app=pushed["name"], dataset="patients", sites=["kind=hospital"],
                                    run_config=run_config)  # fmt: skip
        support.wait_for(
            lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), timeout_s, f"{example} to end"
        )
        return client.get_job(job["job"])


def roll_out_and_score(coordinator, hospitals, job: dict, model: str) -> float:
    """The job's published model, rolled out to the hospitals and scored at one with
    `edge-agent infer table`: its accuracy against the table's own labels."""
    from cloud_coordinator.registry.client import RegistryClient

    assert job["published_models"] == [f"{model}:1"]
    record = coordinator.registry.get(model, "1")
    assert record.creator == f"job:{job['job']}"  # registered and signed under the job's provenance
    with support.operator(coordinator) as op:
        RegistryClient(op).rollout(model, "1", ["kind=hospital"])
    site = hospitals[0]
    support.wait_for(lambda: [m.ref for m in site.models.list() if m.active] == [f"{model}:1"], 30,
                     f"{model} active at hospital-a")  # fmt: skip
    scored = cli("edge-agent", "infer", "table", "patients", "--model", model, "--output", "scores",
                 "--data-dir", str(site.layout.root), "--json")  # fmt: skip
    assert json.loads(scored.stdout)["rows"] > 100
    catalog = Catalog.open(site.layout.catalog_db)
    scores = dict(catalog.db.execute("select patient_id, label from scores").fetchall())
    truth = dict(catalog.db.execute("select patient_id, diagnosis from patients").fetchall())
    return float(np.mean([scores[k] == truth[k] for k in truth]))


def test_the_numpy_example_trains_publishes_and_is_scored_at_a_site(coordinator, hospitals):
    job = run_example(coordinator, hospitals, "numpy-app", **{"num-server-rounds": 4})
    assert job["state"] == "completed", job["error"]
    assert [r["round"] for r in job["rounds"]] == [1, 2, 3, 4]
    assert all(r["participants"] == HOSPITALS and not r["excluded"] for r in job["rounds"])
    assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.9
    assert roll_out_and_score(coordinator, hospitals, job, "numpy-softmax") > 0.9


def test_the_sklearn_example_trains_publishes_and_is_scored_at_a_site(coordinator, hospitals):
    job = run_example(coordinator, hospitals, "sklearn-app")
    assert job["state"] == "completed", job["error"]
    assert all(r["participants"] == HOSPITALS for r in job["rounds"])
    assert job["rounds"][-1]["eval_metrics"]["accuracy"] > 0.9
    assert roll_out_and_score(coordinator, hospitals, job, "sklearn-logreg") > 0.9


def test_the_pytorch_example_trains_publishes_and_is_scored_at_a_site(coordinator, hospitals):
    pytest.importorskip("torch", reason="PyTorch is in the [torch] extra: pip install -e '.[torch]'")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (the [torch] extra)")
    job = run_example(coordinator, hospitals, "pytorch-app", timeout_s=300, **{"num-server-rounds": 3})
    assert job["state"] == "completed", job["error"]
    assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.85
    assert roll_out_and_score(coordinator, hospitals, job, "pytorch-mlp") > 0.9
