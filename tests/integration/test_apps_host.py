"""Users' own Flower apps at real agents: the coordinator sends each Flower message down a
site's mTLS control stream, the site runs it in the job's worker process (real bundles, real
catalogs, real processes; the test plays the ServerApp's part, one message at a time)."""

from __future__ import annotations

import logging
import time
import uuid

import psutil
import pytest

from edge_agent.apps.install import install_bundle
from edge_agent.apps.store import AppStore
from edge_agent.catalog.store import Catalog
from silolink import errors
from silolink.apps.fab import FabLimits
from silolink.config import TrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb
from silolink_demo import datasets
from tests import support
from tests.flower_app_builders import fab_of, write_app


@pytest.fixture(autouse=True)
def _identity(flower_server_identity):
    """The test process creates Flower Messages as a ServerApp process would."""


@pytest.fixture
def site(make_agent, tmp_path):
    """A hospital with breast-cancer patients, allowing training on them; short timeouts."""
    agent = make_agent("hospital-a", training=TrainingConfig(datasets=("patients",), message_timeout_s=3))
    _, parts = datasets.breast_cancer_splits(["hospital-a"])
    source = datasets.write_csv(tmp_path / "a.csv", parts["hospital-a"])
    Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", label="diagnosis", id_column="patient_id")
    return agent


def install(agent, directory):
    store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
    return install_bundle(store, fab_of(directory), "local", FabLimits())[0]


def ask(coordinator, job: str, app: str, action: str = "", site: str = "hospital-a", **fields):
    """Send one train message of ``job`` for ``app``; the reply's content."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as MessageProto

    message = Message(RecordDict({"config": ConfigRecord({"action": action})}), dst_node_id=5, message_type="train")
    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as a Grid assigns them
    task = pb.FlowerTask(job_id=job, app=app, dataset="patients", run_id=7, node_id=5, **fields,
                         message=message_to_proto(message).SerializeToString())  # fmt: skip
    result = coordinator.hub.request(site, flower=task).result(30)
    proto = MessageProto()
    proto.ParseFromString(result.flower.message)
    return message_from_proto(proto).content


def probe(content) -> dict:
    return dict(content.config_records["probe"])


def test_an_installed_app_runs_with_its_config_the_site_data_and_one_context_per_job(coordinator, site, tmp_path):
    install(site, write_app(tmp_path))
    first = probe(ask(coordinator, "job-1", "probe-app"))
    assert first["run.learning-rate"] == 0.1 and first["run.mode"] == "fast"  # [tool.flwr.app.config]
    assert {k: v for k, v in first.items() if k.startswith("node.")} == {  # a name, not where the data lives
        "node.dataset": "patients",
        "node.silolink-site": "agent",
    }
    assert first["marker"] == "one" and first["messages"] == 1
    second = probe(ask(coordinator, "job-1", "probe-app"))
    assert second["messages"] == 2 and second["pid"] == first["pid"]  # the job's Context and process persist
    other = probe(ask(coordinator, "job-2", "probe-app"))
    assert other["messages"] == 1 and other["pid"] != first["pid"]  # another job, another process
    assert first["pid"] != site_pid()  # never the agent's own process
    rows = ask(coordinator, "job-1", "probe-app", "dataset").metric_records["metrics"]
    assert rows["features"] == 30 and rows["rows"] > 100  # the public data helper read the site's catalog


def site_pid() -> int:
    import os

    return os.getpid()  # the agents of these tests run in the test process


def test_apps_the_site_did_not_approve_are_refused_and_removal_stops_a_running_job(coordinator, site, tmp_path):
    with pytest.raises(errors.PermissionDenied, match=r"app 'nope' is not installed at this site.*apps approve"):
        ask(coordinator, "job-1", "nope")
    app = install(site, write_app(tmp_path))
    worker = probe(ask(coordinator, "job-1", "probe-app"))["pid"]
    AppStore.open(site.layout.state_db, site.layout.apps_dir).remove(app.name, app.version)
    with pytest.raises(errors.PermissionDenied, match="not installed at this site"):
        ask(coordinator, "job-1", "probe-app")
    support.wait_for(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie", 10,
                     "the removed app's worker to stop")  # fmt: skip


def test_app_failures_reach_the_operator_as_type_and_reference_only(coordinator, site, tmp_path, caplog):
    install(site, write_app(tmp_path))
    with caplog.at_level(logging.ERROR), pytest.raises(errors.Internal) as caught:
        ask(coordinator, "job-1", "probe-app", "raise")
    message = caught.value.message
    assert message.startswith("app probe-app:1.0.0 failed (ValueError); details in the site's agent log (ref ")
    assert "4711" not in message and "diagnosis" not in message  # what the app said can quote patient data
    ref = message.rsplit("ref ", 1)[1].rstrip(")")
    logged = [r.getMessage() for r in caplog.records if ref in r.getMessage()]
    assert logged and "patient 4711 has a secret diagnosis" in logged[0]  # the detail stays in the site's log
    assert probe(ask(coordinator, "job-1", "probe-app"))["messages"] == 2  # same worker, same Context


def test_the_agent_survives_an_app_that_exits_or_hangs(coordinator, site, tmp_path):
    install(site, write_app(tmp_path))
    with pytest.raises(errors.Internal, match=r"app probe-app:1.0.0's process exited \(code 3\) while handling"):
        ask(coordinator, "job-1", "probe-app", "exit")
    assert probe(ask(coordinator, "job-1", "probe-app"))["messages"] == 1  # a fresh worker for the job
    with pytest.raises(errors.DeadlineExceeded, match="did not finish handling a message within 3 s; the site stopped"):
        ask(coordinator, "job-2", "probe-app", "hang")
    assert probe(ask(coordinator, "job-2", "probe-app"))["messages"] == 1
    assert site.link.status.state == "connected"


def test_jobs_must_name_the_approved_version_and_hash_and_each_runs_its_own_code(coordinator, site, tmp_path):
    one = install(site, write_app(tmp_path / "1", marker="one"))
    two = install(site, write_app(tmp_path / "2", version="2.0.0", marker="two"))
    with pytest.raises(errors.FailedPrecondition, match=r"several versions \(1.0.0, 2.0.0\); the job must name one"):
        ask(coordinator, "job-1", "probe-app")
    first = probe(ask(coordinator, "job-1", "probe-app", app_version="1.0.0", app_sha256=one.sha256))
    second = probe(ask(coordinator, "job-2", "probe-app", app_version="2.0.0", app_sha256=two.sha256))
    assert (first["marker"], second["marker"]) == ("one", "two")  # same module names, each job its own process
    assert probe(ask(coordinator, "job-1", "probe-app", app_version="1.0.0"))["marker"] == "one"
    with pytest.raises(errors.PermissionDenied) as caught:
        ask(coordinator, "job-3", "probe-app", app_version="1.0.0", app_sha256=two.sha256)
    assert caught.value.message == (
        f"the job's app probe-app:1.0.0 has sha256 {two.sha256[:12]}, which this site has not approved; it approved "
        f"probe-app:1.0.0 (sha256 {one.sha256[:12]}). The site runs only code it approved"
    )
    with pytest.raises(errors.PermissionDenied, match="app 'probe-app:3.0.0' is not installed at this site"):
        ask(coordinator, "job-3", "probe-app", app_version="3.0.0")


def test_the_jobs_run_config_over_the_declared_one_and_the_end_of_a_job(coordinator, site, tmp_path):
    from silolink.protos import config_to_proto

    install(site, write_app(tmp_path))
    given = probe(
        ask(coordinator, "job-1", "probe-app", run_config=config_to_proto({"mode": "slow", "local-epochs": 5}))
    )
    assert (given["run.mode"], given["run.local-epochs"], given["run.learning-rate"]) == ("slow", 5, 0.1)
    with pytest.raises(
        errors.InvalidArgument, match="run_config key.* rounds that app probe-app:1.0.0 does not declare"
    ):
        ask(coordinator, "job-1", "probe-app", run_config=config_to_proto({"rounds": 3}))
    worker = probe(ask(coordinator, "job-2", "probe-app"))["pid"]
    coordinator.hub.request("hospital-a", end_flower_job=pb.EndFlowerJob(job_id="job-2")).result(10)
    support.wait_for(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie", 10,
                     "the ended job's worker to stop")  # fmt: skip
    assert probe(ask(coordinator, "job-2", "probe-app"))["messages"] == 1  # a new Context if it comes back


def test_data_errors_name_columns_and_pass_through(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-b", training=TrainingConfig(datasets=("patients",)))
    _, parts = datasets.breast_cancer_splits(["hospital-b"])
    source = datasets.write_csv(tmp_path / "b.csv", parts["hospital-b"])
    Catalog.open(agent.layout.catalog_db).import_csv(source, "patients", id_column="patient_id")  # no --label
    install(agent, write_app(tmp_path))
    with pytest.raises(errors.FailedPrecondition, match="dataset 'patients' has no label column; import it with"):
        ask(coordinator, "job-1", "probe-app", "dataset", site="hospital-b")


def test_the_builtin_tabular_app_still_runs_through_the_worker(coordinator, site):
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as MessageProto

    message = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=5, message_type="query.stats")
    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    task = pb.FlowerTask(job_id="job-1", app="tabular", dataset="patients", run_id=7, node_id=5,
                         message=message_to_proto(message).SerializeToString())  # fmt: skip
    proto = MessageProto()
    proto.ParseFromString(coordinator.hub.request("hospital-a", flower=task).result(30).flower.message)
    stats = message_from_proto(proto).content.metric_records["stats"]
    assert len(stats["sum"]) == 30 and stats["num-examples"] > 100


def test_a_started_job_has_its_clientapp_ready_before_its_first_message(coordinator, site, tmp_path):
    """start_flower_job (sent when a job's process starts) forks the worker and imports the app
    ahead of the first round, under the same checks as a message; that first message then finds it."""
    install(site, write_app(tmp_path))
    task = pb.FlowerTask(job_id="job-3", app="probe-app", dataset="patients", run_id=7, node_id=5)
    coordinator.hub.request("hospital-a", start_flower_job=pb.StartFlowerJob(task=task)).result(30)
    sent = time.time()
    reply = probe(ask(coordinator, "job-3", "probe-app"))
    assert reply["messages"] == 1  # the job's Context, fresh: nothing ran in it before
    assert psutil.Process(reply["pid"]).create_time() < sent  # the worker was already running

    task.app = "unknown-app"  # not approved here: refused for the same reason a message would be
    with pytest.raises(errors.PermissionDenied, match="'unknown-app' is not installed at this site"):
        coordinator.hub.request("hospital-a", start_flower_job=pb.StartFlowerJob(task=task)).result(30)
