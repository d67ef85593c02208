"""The example apps in examples/, unchanged, at real agents: each hospital installs the
app's bundle, then the app's own ServerApp runs its own Flower strategy against them
(through tests/integration/hub_grid.py: the sites' control streams over mTLS)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from edge_agent.apps.install import install_bundle
from edge_agent.apps.store import AppStore
from edge_agent.catalog.store import Catalog
from silolink.apps.fab import FabLimits, build_fab, inspect_fab
from silolink.config import TrainingConfig
from silolink_demo import datasets
from tests.flower_app_builders import EXAMPLES
from tests.integration.hub_grid import HubGrid

HOSPITALS = ["hospital-a", "hospital-b"]


@pytest.fixture
def hospitals(make_agent, tmp_path, flower_server_identity):
    """Two hospitals holding their share of the breast-cancer patients, allowing training on them."""
    reference, parts = datasets.breast_cancer_splits(HOSPITALS)
    agents = []
    for name in HOSPITALS:
        agent = make_agent(name, training=TrainingConfig(datasets=("patients",)))
        source = datasets.write_csv(tmp_path / f"{name}.csv", parts[name])
        Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="diagnosis", id_column="patient_id")
        agents.append(agent)
    return agents, reference


def run_example(coordinator, agents, monkeypatch, example: str, **run_config) -> HubGrid:
    """Install the example at every site, then run its ServerApp; the grid holds the sites' replies."""
    from flwr.app import Context, RecordDict

    directory = EXAMPLES / example
    bundle = build_fab(directory)
    for agent in agents:
        install_bundle(AppStore.open(agent.layout.state_db, agent.layout.apps_dir), bundle, "local", FabLimits())
    info = inspect_fab(bundle)
    monkeypatch.syspath_prepend(str(directory))
    server = importlib.import_module(info.serverapp.partition(":")[0])
    grid = HubGrid(coordinator, [a.site for a in agents], info.name, "patients")
    server.app(grid, Context(7, 0, {}, RecordDict(), {**info.config, **run_config}))
    return grid


def last_evaluation(grid: HubGrid) -> dict[str, dict]:
    evaluations = [(site, r) for site, r in grid.replies if r.metadata.message_type == "evaluate"]
    return {site: dict(r.content.metric_records["metrics"]) for site, r in evaluations[-len(HOSPITALS) :]}


def test_the_numpy_example_trains_at_the_sites(coordinator, hospitals, monkeypatch):
    agents, _ = hospitals
    grid = run_example(coordinator, agents, monkeypatch, "numpy-app")
    assert grid.refusals == []
    final = last_evaluation(grid)
    assert set(final) == set(HOSPITALS)
    assert all(m["eval_accuracy"] > 0.9 for m in final.values()), final


def test_the_sklearn_example_trains_at_the_sites(coordinator, hospitals, monkeypatch):
    agents, _ = hospitals
    grid = run_example(coordinator, agents, monkeypatch, "sklearn-app")
    assert grid.refusals == []
    final = last_evaluation(grid)
    assert set(final) == set(HOSPITALS)
    assert all(m["accuracy"] > 0.9 for m in final.values()), final


def test_the_pytorch_example_trains_exports_and_scores_at_a_site(coordinator, hospitals, monkeypatch, tmp_path):
    pytest.importorskip("torch", reason="PyTorch is in the [torch] extra: pip install -e '.[torch]'")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (the [torch] extra)")
    from edge_agent.inference.table import score_table
    from edge_agent.models.store import ModelStore

    agents, reference = hospitals
    monkeypatch.chdir(tmp_path)  # the ServerApp writes its ONNX file where it runs
    grid = run_example(coordinator, agents, monkeypatch, "pytorch-app", **{"num-server-rounds": 3})
    assert grid.refusals == []
    assert all(m["eval_accuracy"] > 0.85 for m in last_evaluation(grid).values())
    exported = tmp_path / "pytorch-mlp.onnx"
    site = agents[0]
    models = ModelStore.open(site.layout.state_db, site.layout.model_blobs)
    models.install(exported, "pytorch-mlp", "1")
    catalog = Catalog.open(site.layout.catalog_db)
    result = score_table(catalog, models, "patients", "pytorch-mlp", None, "scores")
    assert result.columns[:2] == ["patient_id", "label"]
    scores = dict(catalog.db.execute("select patient_id, label from scores").fetchall())
    truth = dict(catalog.db.execute("select patient_id, diagnosis from patients").fetchall())
    assert np.mean([scores[k] == truth[k] for k in truth]) > 0.9
