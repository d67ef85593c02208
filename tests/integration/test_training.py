"""Federated training end to end: Flower strategies at the coordinator, the tabular app at
real agents over mTLS, breast-cancer rows split between hospitals."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.catalog.store import Catalog
from silolink import errors
from silolink.config import TrainingConfig
from silolink_demo import datasets
from tests import support

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


def hospital(make_agent, tmp_path, name: str, split: dict, **training):
    config = TrainingConfig(**{"datasets": ("patients",), **training})
    agent = make_agent(name, training=config)
    source = datasets.write_csv(tmp_path / f"{name}.csv", split)
    Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="diagnosis", id_column="patient_id")
    return agent


@pytest.fixture
def splits():
    return datasets.breast_cancer_splits(HOSPITALS)


def run_job(coordinator, timeout_s: float = 90, **spec):
    with support.operator(coordinator) as client:
        job = client.start_training(**{"app": "tabular", "dataset": "patients", "sites": ["kind=hospital"], **spec})
        support.wait_for(
            lambda: client.get_job(job["job"])["state"] not in ("queued", "running"),
            timeout_s,
            f"job {job['job']} to end",
        )
        return client.get_job(job["job"])


def test_fedavg_trains_a_model_the_sites_agree_is_good(coordinator, make_agent, tmp_path, splits):
    reference, parts = splits
    for name in HOSPITALS:
        hospital(make_agent, tmp_path, name, parts[name])
    job = run_job(coordinator, rounds=3, min_sites=3, round_timeout_s=30, local_epochs=2)
    assert job["state"] == "completed", job["error"]
    assert [r["round"] for r in job["rounds"]] == [1, 2, 3]
    assert all(r["participants"] == HOSPITALS and not r["excluded"] for r in job["rounds"]), [
        (r["round"], r["participants"], r["excluded"]) for r in job["rounds"]
    ]
    assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.9
    # The exported model scores the held-back reference patients well.
    import onnxruntime as ort

    name, version = job["model"].split(":")
    assert name == "patients-tabular"  # registered (and signed) under the default name
    record = coordinator.registry.get(name, version)
    assert record.source_job == job["job"] and record.creator == f"job:{job['job']}"
    path = coordinator.registry.blob_path(record.sha256)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"X": reference["X"]})[0]
    assert np.mean(labels == reference["y"]) > 0.9


def test_sites_refuse_what_they_do_not_allow_and_bad_updates_are_excluded(coordinator, make_agent, tmp_path, splits):
    _, parts = splits
    hospital(make_agent, tmp_path, "hospital-a", parts["hospital-a"])
    hospital(make_agent, tmp_path, "hospital-b", parts["hospital-b"])
    hospital(make_agent, tmp_path, "hospital-c", parts["hospital-c"], datasets=())
    job = run_job(coordinator, rounds=2, min_sites=2, round_timeout_s=20)
    assert job["state"] == "completed", job["error"]
    for record in job["rounds"]:
        assert record["participants"] == ["hospital-a", "hospital-b"]
        assert any(e["site"] == "hospital-c" and "not allowed for training" in e["reason"] for e in record["excluded"])


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        ("tests.integration.flower_apps:nan_app", "array W holds NaN or infinite values"),
        ("tests.integration.flower_apps:wrong_shape_app", "array W has shape [3, 2], expected [30, 2]"),
        ("tests.integration.flower_apps:silent_app", "site hospital-c did not answer within 3 s"),
    ],
)
def test_a_misbehaving_site_is_excluded_with_a_reason(coordinator, make_agent, tmp_path, splits, app, reason):
    _, parts = splits
    hospital(make_agent, tmp_path, "hospital-a", parts["hospital-a"])
    hospital(make_agent, tmp_path, "hospital-b", parts["hospital-b"])
    hospital(make_agent, tmp_path, "hospital-c", parts["hospital-c"], apps=(f"tabular={app}",))
    job = run_job(coordinator, rounds=1, min_sites=2, round_timeout_s=3)
    assert job["state"] == "completed", job["error"]
    (record,) = job["rounds"]
    assert record["participants"] == ["hospital-a", "hospital-b"]
    assert {"site": "hospital-c", "reason": reason, "message_type": "train"} in record["excluded"]


def test_job_fails_cleanly_when_too_few_sites_can_take_part(coordinator, make_agent, tmp_path, splits):
    _, parts = splits
    hospital(make_agent, tmp_path, "hospital-a", parts["hospital-a"])
    hospital(make_agent, tmp_path, "hospital-b", parts["hospital-b"], apps=("tabular-secagg",))
    job = run_job(coordinator, rounds=1, min_sites=2, round_timeout_s=10)
    assert job["state"] == "failed"
    assert "feature statistics: 1 usable repl(ies), --min-sites is 2" in job["error"]
    assert "site hospital-b: app 'tabular' is not installed at this site" in job["error"]
    with support.operator(coordinator) as client, pytest.raises(errors.NotFound, match="no app named 'nope'"):
        client.start_training(app="nope", dataset="patients", sites=["kind=hospital"], rounds=1)
    with support.operator(coordinator) as client, pytest.raises(errors.FailedPrecondition, match="at least 3"):
        client.start_training(app="tabular", dataset="patients", sites=["kind=hospital"], rounds=1, min_sites=3)
    with support.operator(coordinator) as client, pytest.raises(errors.InvalidArgument, match="strategy"):
        client.start_training(app="tabular", dataset="patients", sites=["kind=hospital"], rounds=1, strategy="sgd")


def test_a_coordinator_restart_resumes_the_job_which_can_be_stopped(tmp_path, splits):
    _, parts = splits
    coordinator = support.start_coordinator(tmp_path / "coordinator")
    agents = []
    try:
        for name in ("hospital-a", "hospital-b"):
            agent_dir = tmp_path / name
            support.enroll_site(coordinator, name, agent_dir)
            config = TrainingConfig(apps=("tabular=tests.integration.flower_apps:slow_app",), datasets=("patients",))
            agent = support.start_agent(agent_dir, training=config)
            agents.append(agent)
            source = datasets.write_csv(tmp_path / f"{name}.csv", parts[name])
            Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="diagnosis")
        for agent in agents:
            assert agent.wait_connected(10)
        with support.operator(coordinator) as client:
            job_id = client.start_training(
                app="tabular", dataset="patients", sites=["kind=hospital"], rounds=200, round_timeout_s=20
            )["job"]
            support.wait_for(lambda: len(client.get_job(job_id)["rounds"]) >= 1, 60, "a first round")
        address = coordinator.address
        coordinator.stop(0)
        host, port = address.rsplit(":", 1)
        coordinator = support.start_coordinator(tmp_path / "coordinator", listen=f"{host}:{port}")
        with support.operator(coordinator) as client:
            before = client.get_job(job_id)
            assert before["state"] == "running" and before["resumed"] == 1, before
            done = len(before["rounds"])
            support.wait_for(lambda: len(client.get_job(job_id)["rounds"]) > done, 60, "a round after the restart")
            job = client.stop_job(job_id)
            assert job["state"] == "stopped" and "stopped by operator" in job["error"]
            rounds = [r["round"] for r in job["rounds"]]
            assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) > done  # went on from the checkpoint
            with pytest.raises(errors.FailedPrecondition, match="already stopped"):
                client.stop_job(job_id)
    finally:
        for agent in agents:
            agent.stop(0)
        coordinator.stop(0)


@pytest.mark.parametrize(
    "spec",
    [
        {"strategy": "fedprox", "proximal_mu": 0.1},
        {"strategy": "fedadam", "server_learning_rate": 0.05},
        {"strategy": "fedavg", "dp_noise_multiplier": 0.5, "dp_clipping_norm": 5.0},
    ],
)
def test_other_strategies_and_differential_privacy(coordinator, make_agent, tmp_path, splits, spec):
    _, parts = splits
    for name in HOSPITALS[:2]:
        hospital(make_agent, tmp_path, name, parts[name])
    job = run_job(coordinator, rounds=2, min_sites=2, round_timeout_s=20, **spec)
    assert job["state"] == "completed", job["error"]
    assert len(job["rounds"]) == 2
    if spec.get("dp_noise_multiplier"):  # the noise can cost accuracy; the privacy spent is reported
        assert job["privacy"]["delta"] == pytest.approx(1e-5)
        assert 0 < job["privacy"]["epsilon"] < float("inf")
    else:
        assert job["privacy"] is None
        assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.8


def test_a_model_with_hidden_layers_trains_exports_and_refuses_bad_sizes(coordinator, make_agent, tmp_path, splits):
    reference, parts = splits
    for name in HOSPITALS[:2]:
        hospital(make_agent, tmp_path, name, parts[name])
    job = run_job(coordinator, rounds=3, min_sites=2, round_timeout_s=30, local_epochs=2, hidden_units=[16])
    assert job["state"] == "completed", job["error"]
    assert job["spec"]["hidden_units"] == [16]
    assert job["rounds"][-1]["eval_metrics"]["eval_accuracy"] > 0.85
    import onnx
    import onnxruntime as ort

    name, version = job["model"].split(":")
    path = coordinator.registry.blob_path(coordinator.registry.get(name, version).sha256)
    assert "Relu" in {node.op_type for node in onnx.load(str(path)).graph.node}
    labels = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["label"], {"X": reference["X"]})
    assert np.mean(labels[0] == reference["y"]) > 0.85
    with support.operator(coordinator) as client:
        for hidden in ([0], [8] * 5, [5000]):
            with pytest.raises(errors.InvalidArgument, match="hidden layers"):
                client.start_training(
                    app="tabular", dataset="patients", sites=["kind=hospital"], rounds=1, hidden_units=hidden
                )


@pytest.mark.parametrize("hidden", [[], [8]])
def test_secure_aggregation_with_flower_secaggplus(coordinator, make_agent, tmp_path, splits, hidden):
    reference, parts = splits
    for name in HOSPITALS:
        hospital(make_agent, tmp_path, name, parts[name])
    job = run_job(coordinator, app="tabular-secagg", rounds=2, min_sites=3, round_timeout_s=30, secure_aggregation=True,
                  hidden_units=hidden)  # fmt: skip
    assert job["state"] == "completed", job["error"]
    assert [r["round"] for r in job["rounds"]] == [1, 2]
    assert job["rounds"][-1]["participants"] == HOSPITALS
    import onnxruntime as ort

    name, version = job["model"].split(":")
    path = coordinator.registry.blob_path(coordinator.registry.get(name, version).sha256)
    labels = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["label"], {"X": reference["X"]})
    assert np.mean(labels[0] == reference["y"]) > 0.85
    with support.operator(coordinator) as client, pytest.raises(errors.InvalidArgument, match="at least|3 or more"):
        client.start_training(
            app="tabular-secagg", dataset="patients", sites=["kind=hospital"], rounds=1, min_sites=2,
            secure_aggregation=True,
        )  # fmt: skip
