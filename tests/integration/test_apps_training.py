"""Users' own Flower apps run unchanged: the ServerApp in the job's process against real
agents over mTLS, with its run_config, its own strategy (subclasses, any of Flower's, the
legacy API, SecAgg+), its logs, its failures and the model it publishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_coordinator.apps.client import AppsClient
from edge_agent.apps.install import install_bundle
from edge_agent.apps.store import AppStore
from edge_agent.catalog.store import Catalog
from silolink import errors
from silolink.apps.fab import FabLimits, build_fab
from silolink.config import TrainingConfig
from tests import support
from tests.flower_app_builders import write_app
from tests.integration import user_client_apps
from tests.integration.user_client_apps import PATIENT_MARKER

CLIENTS = Path(user_client_apps.__file__).read_text()


def app(root: Path, name: str, server: str, client: str = "step_app", **options) -> Path:
    """A Flower app directory: ``server`` as its server_app.py, the ClientApp ``client`` of
    user_client_apps as its client_app.py's ``app``."""
    options.setdefault("config", {"num-server-rounds": 2, "lr": 0.5})
    options.setdefault("dependencies", ["numpy"])
    return write_app(root, name, client=f"{CLIENTS}\napp = {client}\n", server=server, **options)


def site(make_agent, tmp_path, name: str, *apps: Path, rows: int = 20):
    """An enrolled, running hospital allowing training on dataset ``rows`` (of ``rows``
    rows), whose admin approved (installed) exactly the bundles of ``apps``."""
    agent = make_agent(name, training=TrainingConfig(datasets=("rows",)))
    csv = tmp_path / f"{name}.csv"
    csv.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(rows)))
    Catalog.open(agent.layout.catalog_db).import_csv(csv, "rows", label="label")
    store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
    for app_dir in apps:
        install_bundle(store, build_fab(app_dir), "local", FabLimits())
    return agent


def push(coordinator, app_dir):
    with support.operator(coordinator) as op:
        return AppsClient(op).push(app_dir)


def run(coordinator, app: str, timeout_s: float = 60, **spec):
    with support.operator(coordinator) as client:
        job = client.start_training(app=app, dataset="rows", sites=["kind=hospital"], **spec)
        support.wait_for(
            lambda: client.get_job(job["job"])["state"] not in ("queued", "running"), timeout_s, "the job to end"
        )
        return client.get_job(job["job"])


def logs(coordinator, job_id: str) -> str:
    with support.operator(coordinator) as client:
        data, _, complete = client.read_job_logs(job_id)
    assert complete
    return data.decode()


FEDAVG_SERVER = """
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(min_available_nodes=2, min_train_nodes=1, min_evaluate_nodes=1)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(3)]), timeout=30,
                   num_rounds=context.run_config["num-server-rounds"], train_config=ConfigRecord({"lr": 0.5}))
"""

RUN_CONFIG_SERVER = """
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
import numpy as np

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    print("run_config", sorted(context.run_config.items()))
    strategy = FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    rounds, lr = context.run_config["num-server-rounds"], context.run_config["lr"]
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]), num_rounds=rounds,
                   train_config=ConfigRecord({"lr": lr}), timeout=30)
"""


def test_run_config_is_the_apps_defaults_with_the_overrides(coordinator, make_agent, tmp_path):
    config = {"num-server-rounds": 2, "lr": 0.5, "mode": "fast", "verbose": False}
    app_dir = app(tmp_path, "cfgapp", RUN_CONFIG_SERVER, config=config)
    pushed = push(coordinator, app_dir)
    for name in ("hospital-a", "hospital-b"):
        site(make_agent, tmp_path, name, app_dir)
    job = run(coordinator, "cfgapp", run_config={"num-server-rounds": 3, "lr": 1, "mode": "slow"})
    assert job["state"] == "completed", job["error"]
    assert job["run_config"] == {"num-server-rounds": 3, "lr": 1.0, "mode": "slow", "verbose": False}
    assert (job["app_version"], job["app_sha256"]) == ("1.0.0", pushed["sha256"])
    assert "run_config [('lr', 1.0), ('mode', 'slow'), ('num-server-rounds', 3), ('verbose', False)]" in logs(
        coordinator, job["job"]
    )
    assert [r["round"] for r in job["rounds"]] == [1, 2, 3]
    assert all(r["participants"] == ["hospital-a", "hospital-b"] for r in job["rounds"])
    assert job["rounds"][0]["train_metrics"]["seen-rounds"] == 3  # the ClientApps got the same run_config
    # The ServerApp sent lr from its run_config (1.0): one step takes the sites' arrays to 1 exactly.
    assert job["rounds"][0]["eval_metrics"]["eval_loss"] == 0.0
    with support.operator(coordinator) as client:
        for overrides, reason in [
            ({"rounds": 3}, "does not declare run_config key 'rounds'.*declares: lr, mode, num-server-rounds"),
            ({"num-server-rounds": "many"}, "num-server-rounds is declared as int"),
            ({"verbose": 1}, "verbose is declared as bool"),
        ]:
            with pytest.raises(errors.InvalidArgument, match=reason):
                client.start_training(app="cfgapp", dataset="rows", sites=["kind=hospital"], run_config=overrides)
        with pytest.raises(errors.InvalidArgument, match="--strategy: app cfgapp:1.0.0 does not declare"):
            client.start_training(app="cfgapp", dataset="rows", sites=["kind=hospital"], strategy="fedprox")
        with pytest.raises(errors.NotFound, match="app 'cfgapp' has no version '9.9'"):
            client.start_training(app="cfgapp", app_version="9.9", dataset="rows", sites=["kind=hospital"])


STRATEGIES_SERVER = """
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flower

app = ServerApp()


class DampedFedAvg(flower.FedAvg):
    \"\"\"A user's own strategy: FedAvg whose step is halved, with a metric of its own.\"\"\"

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        damped = [0.5 * a for a in arrays.to_numpy_ndarrays()]
        return ArrayRecord(damped), MetricRecord({**(metrics or {}), "damping": 0.5})


def norm(server_round, arrays):
    return MetricRecord({"norm": float(np.abs(arrays.to_numpy_ndarrays()[0]).sum())})


@app.main()
def main(grid: Grid, context: Context) -> None:
    common = dict(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    choices = {
        "damped": lambda: DampedFedAvg(**common),
        "fedmedian": lambda: flower.FedMedian(**common),
        "fedtrimmedavg": lambda: flower.FedTrimmedAvg(beta=0.0, **common),
        "fedyogi": lambda: flower.FedYogi(**common),
        "fedavgm": lambda: flower.FedAvgM(**common),
        "dp": lambda: flower.DifferentialPrivacyServerSideFixedClipping(
            flower.FedAvg(**common), noise_multiplier=0.1, clipping_norm=10.0, num_sampled_clients=2),
        "dpadaptive": lambda: flower.DifferentialPrivacyServerSideAdaptiveClipping(
            flower.FedAvg(**common), noise_multiplier=0.1, num_sampled_clients=2),
        "fedadagrad": lambda: flower.FedAdagrad(**common),
        "krum": lambda: flower.Krum(num_malicious_nodes=0, **common),
        "multikrum": lambda: flower.MultiKrum(num_malicious_nodes=0, num_nodes_to_select=1, **common),
        "qfedavg": lambda: flower.QFedAvg(client_learning_rate=0.5, **common),
    }
    for name in context.run_config["strategies"].split(","):
        result = choices[name]().start(grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]), num_rounds=1,
                                       train_config=ConfigRecord({"lr": 0.5}), timeout=30,
                                       evaluate_fn=norm)
        print("strategy", name, "->", [round(float(v), 3) for v in result.arrays.to_numpy_ndarrays()[0]])
"""


def test_custom_strategy_subclasses_and_flowers_strategies_run_as_the_app_chose(coordinator, make_agent, tmp_path):
    app_dir = app(tmp_path, "strategies", STRATEGIES_SERVER, config={"strategies": "damped"})
    push(coordinator, app_dir)
    for name in ("hospital-a", "hospital-b"):
        site(make_agent, tmp_path, name, app_dir)
    job = run(coordinator, "strategies")
    assert job["state"] == "completed", job["error"]
    (record,) = job["rounds"]
    assert record["train_metrics"]["damping"] == 0.5  # the subclass's own aggregation ran
    assert record["server_metrics"] == {"norm": pytest.approx(0.5)}  # 0.5 * (0 + 0.5 * (1 - 0)) * 2 entries
    assert "strategy damped -> [0.25, 0.25]" in logs(coordinator, job["job"])
    others = ("fedmedian", "fedtrimmedavg", "fedyogi", "fedavgm", "fedadagrad", "krum", "multikrum", "qfedavg", "dp",
              "dpadaptive")  # fmt: skip
    job = run(coordinator, "strategies", run_config={"strategies": ",".join(others)})
    assert job["state"] == "completed", job["error"]
    output = logs(coordinator, job["job"])
    for name in others:
        assert f"strategy {name} -> [" in output


MORE_STRATEGIES_SERVER = """
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flower

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    common = dict(min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3)
    clip = dict(noise_multiplier=0.0, num_sampled_clients=3)  # no noise: the clipping shows exactly
    choices = {
        "bulyan": lambda: flower.Bulyan(num_malicious_nodes=0, **common),  # needs 4 * 0 + 3 sites
        "fedprox": lambda: flower.FedProx(proximal_mu=0.25, **common),
        "fedadam": lambda: flower.FedAdam(eta=0.1, **common),
        "dp-client-fixed": lambda: flower.DifferentialPrivacyClientSideFixedClipping(
            flower.FedAvg(**common), clipping_norm=0.1, **clip),
        "dp-client-adaptive": lambda: flower.DifferentialPrivacyClientSideAdaptiveClipping(
            flower.FedAvg(**common), initial_clipping_norm=0.1, **clip),
    }
    for name in context.run_config["strategies"].split(","):
        strategy = choices[name]()
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]), num_rounds=1,
                                train_config=ConfigRecord({"lr": 0.5}), timeout=30)
        print("strategy", name, "->", [round(float(v), 4) for v in result.arrays.to_numpy_ndarrays()[0]],
              "sites' train metrics", dict(result.train_metrics_clientapp[1]),
              "clipping norm", getattr(strategy, "clipping_norm", None))
"""


def test_bulyan_fedprox_fedadam_and_client_side_dp_with_flowers_mods(coordinator, make_agent, tmp_path):
    """Three apps, as a user writes them, on three sites at once: Bulyan (it needs 3+ sites),
    FedProx and FedAdam with the plain ClientApp; Flower's client-side DP wrappers with their
    clipping mods (fixedclipping_mod, adaptiveclipping_mod) on the ClientApps' train functions."""
    apps = {
        "robust": ("step_app", "bulyan,fedprox,fedadam"),
        "dp-fixed": ("fixedclip_app", "dp-client-fixed"),
        "dp-adaptive": ("adaptiveclip_app", "dp-client-adaptive"),
    }
    dirs = [
        app(tmp_path / name, name, MORE_STRATEGIES_SERVER, client, config={"strategies": strategies})
        for name, (client, strategies) in apps.items()
    ]
    for app_dir in dirs:
        push(coordinator, app_dir)
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        site(make_agent, tmp_path, name, *dirs)
    with support.operator(coordinator) as client:  # the three jobs run side by side
        started = [client.start_training(app=name, dataset="rows", sites=["kind=hospital"]) for name in apps]
        ids = [job["job"] for job in started]
        support.wait_for(
            lambda: all(client.get_job(i)["state"] not in ("queued", "running") for i in ids), 90, "the jobs to end"
        )
        jobs = {name: client.get_job(i) for name, i in zip(apps, ids, strict=True)}
    for name, job in jobs.items():
        assert job["state"] == "completed", (name, job["error"])
        assert job["rounds"][0]["participants"] == ["hospital-a", "hospital-b", "hospital-c"], name
    robust = logs(coordinator, jobs["robust"]["job"])
    assert "strategy bulyan -> [0.5, 0.5]" in robust  # three equal updates: Bulyan keeps them
    assert "strategy fedprox -> [0.5, 0.5] sites' train metrics {" in robust
    assert "'proximal-mu': 0.25" in robust  # FedProx's mu reached every ClientApp
    assert "strategy fedadam -> [0.0728, 0.0728]" in robust  # the server-side Adam step (eta 0.1), not FedAvg
    # Each site stepped to [0.5, 0.5] (norm 0.707); its mod clipped the update to norm 0.1 before it left.
    assert "strategy dp-client-fixed -> [0.0707, 0.0707]" in logs(coordinator, jobs["dp-fixed"]["job"])
    adaptive = logs(coordinator, jobs["dp-adaptive"]["job"])
    assert "strategy dp-client-adaptive -> [0.0707, 0.0707]" in adaptive
    norm = float(adaptive.split("strategy dp-client-adaptive ->")[1].split("clipping norm ")[1].split()[0])
    assert norm != 0.1  # the sites' norm bits moved the clipping norm for the next round


LEGACY_SERVER = """
import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.compat.server import ServerAppComponents
from flwr.server import ServerApp, ServerConfig
from flwr.server.strategy import FedAvg


def weighted(metrics):
    total = sum(n for n, _ in metrics)
    return {"train_loss": sum(n * m["train_loss"] for n, m in metrics) / total}


def server_fn(context: Context) -> ServerAppComponents:
    strategy = FedAvg(min_fit_clients=2, min_evaluate_clients=2, min_available_clients=2,
                      fit_metrics_aggregation_fn=weighted, initial_parameters=ndarrays_to_parameters([np.zeros(4)]),
                      on_fit_config_fn=lambda r: {"lr": 0.5})
    rounds = context.run_config["num-server-rounds"]
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))


app = ServerApp(server_fn=server_fn)
"""

SECAGG_SERVER = """
import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.serverapp import Grid, ServerApp
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(min_fit_clients=3, min_evaluate_clients=3, min_available_clients=3,
                      initial_parameters=ndarrays_to_parameters([np.zeros(4)]),
                      on_fit_config_fn=lambda r: {"lr": 0.5})
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=context.run_config["num-server-rounds"]),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2, timeout=30))
    workflow(grid, legacy)
    print("secagg history", legacy.history.losses_distributed)
"""


@pytest.mark.parametrize(
    ("server", "client", "sites"),
    [(LEGACY_SERVER, "legacy_app", 2), (SECAGG_SERVER, "secagg_app", 3)],
    ids=["server_fn", "secaggplus"],
)
def test_flowers_legacy_api_and_secaggplus_run(coordinator, make_agent, tmp_path, server, client, sites):
    app_dir = app(tmp_path, "legacy", server, client, config={"num-server-rounds": 2})
    push(coordinator, app_dir)
    names = ["hospital-a", "hospital-b", "hospital-c"][:sites]
    for name in names:
        site(make_agent, tmp_path, name, app_dir)
    job = run(coordinator, "legacy")
    assert job["state"] == "completed", job["error"]
    assert [r["round"] for r in job["rounds"]] == [1, 2]
    assert all(r["participants"] == names and not r["excluded"] for r in job["rounds"])
    assert all("loss" in r["eval_metrics"] for r in job["rounds"])  # from Flower's legacy History
    if client == "legacy_app":
        assert job["rounds"][-1]["train_metrics"]["train_loss"] < job["rounds"][0]["train_metrics"]["train_loss"]
    else:
        assert "secagg history [(1, " in logs(coordinator, job["job"])


FAULTY_SERVERS = {
    "import": ("import nonexistent_module_for_test\n", "could not be imported (ModuleNotFoundError: No module named"),
    "raise": (
        "from flwr.serverapp import ServerApp\napp = ServerApp()\n\n@app.main()\ndef main(grid, context):\n"
        "    print('about to fail')\n    raise ValueError('the strategy cannot start')\n",
        "the ServerApp raised ValueError: the strategy cannot start",
    ),
    "hang": (
        "import time\nfrom flwr.serverapp import ServerApp\napp = ServerApp()\n\n@app.main()\n"
        "def main(grid, context):\n    time.sleep(600)\n",
        "the ServerApp ran past the job's timeout of 3 s (--timeout)",
    ),
    "not a ServerApp": ("app = object()\n", "is a object, not a flwr.serverapp.ServerApp"),
}


def test_a_failing_serverapp_fails_its_job_with_the_reason_and_nothing_else(coordinator, make_agent, tmp_path):
    site(make_agent, tmp_path, "hospital-a")
    with support.operator(coordinator) as client:
        jobs = {}
        for case, (server, _) in FAULTY_SERVERS.items():
            version = f"1.0.{len(jobs)}"
            push(coordinator, app(tmp_path, "faulty", server, version=version))
            job = client.start_training(app="faulty", app_version=version, dataset="rows", sites=["kind=hospital"],
                                        timeout_s=3 if case == "hang" else 120)  # fmt: skip
            jobs[case] = job["job"]
        for case, job_id in jobs.items():
            support.wait_for(
                lambda j=job_id: client.get_job(j)["state"] not in ("queued", "running"), 30, f"the {case} job to end"
            )
            job = client.get_job(job_id)
            assert job["state"] == "failed" and FAULTY_SERVERS[case][1] in job["error"], (case, job["error"])
    assert "about to fail" in logs(coordinator, jobs["raise"])
    assert "Traceback" in logs(coordinator, jobs["raise"])  # the details are in the job's log
    with support.operator(coordinator) as client:  # the coordinator is still fine
        assert len(client.list_jobs()) == len(FAULTY_SERVERS)


def test_a_clientapp_failure_reaches_the_operator_as_its_type_and_a_reference(coordinator, make_agent, tmp_path):
    app_dir = app(tmp_path, "failing", FEDAVG_SERVER, "picky_app", config={"num-server-rounds": 1, "lr": 0.5})
    push(coordinator, app_dir)
    site(make_agent, tmp_path, "hospital-a", app_dir)
    site(make_agent, tmp_path, "hospital-b", app_dir, rows=21)
    job = run(coordinator, "failing")
    # FedAvg with min_train_nodes=2 aggregates what it got; the failure is in the round's record.
    (record,) = job["rounds"]
    (excluded,) = [e for e in record["excluded"] if e["message_type"] == "train"]
    assert excluded["site"] == "hospital-b" and record["participants"] == ["hospital-a"]
    assert "failed (ValueError); details in the site's agent log (ref " in excluded["reason"]
    output = logs(coordinator, job["job"])
    assert PATIENT_MARKER not in str(job) and PATIENT_MARKER not in output
    assert "site hospital-b: app failing:1.0.0 failed (ValueError)" in output  # the strategy saw an error reply


PUBLISH_SERVER = """
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from silolink import serverapp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros((3, 2), np.float32)]), num_rounds=1,
                            train_config=ConfigRecord({"lr": 0.5}), timeout=30)
    weights = result.arrays.to_numpy_ndarrays()[0].astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    print("published", serverapp.publish_model(model.SerializeToString(), name="linear", description="from my app"))
"""


def test_a_published_model_is_registered_under_the_job_and_served_at_a_site(coordinator, make_agent, tmp_path):
    app_dir = app(tmp_path, "publisher", PUBLISH_SERVER, dependencies=["numpy", "onnx"])
    push(coordinator, app_dir)
    agents = [site(make_agent, tmp_path, name, app_dir) for name in ("hospital-a", "hospital-b")]
    job = run(coordinator, "publisher")
    assert job["state"] == "completed", job["error"]
    assert job["model"] == "linear:1" and job["published_models"] == ["linear:1"]
    record = coordinator.registry.get("linear", "1")
    assert (record.creator, record.source_job, record.description) == (f"job:{job['job']}", job["job"], "from my app")
    assert "published linear:1" in logs(coordinator, job["job"])
    entry = [e for e in coordinator.audit.entries() if e.action == "training.publish"][0]
    assert entry.subject == job["job"] and entry.details["model"] == "linear:1"
    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.client import LocalClient

    with support.operator(coordinator) as op:
        RegistryClient(op).rollout("linear", "1", ["site=hospital-a"])
    support.wait_for(lambda: agents[0].models.get("linear").version == "1" if agents[0].models.list() else None, 20,
                     "the model active at hospital-a")  # fmt: skip
    import numpy as np

    with LocalClient.for_data_dir(agents[0].layout.root) as local:
        result = local.infer("linear", {"x": np.ones((1, 3), np.float32)})
    assert result["y"].shape == (1, 2) and np.allclose(result["y"], 1.5)  # 3 inputs x weight 0.5


def test_train_start_watch_exits_non_zero_with_the_reason(coordinator, make_agent, tmp_path):
    """--watch: the final state and reason, and a non-zero exit when the job fails."""
    from click.testing import CliRunner

    from cloud_coordinator.cli import main

    push(coordinator, app(tmp_path, "watched", FAULTY_SERVERS["raise"][0]))
    site(make_agent, tmp_path, "hospital-a")
    args = ["train", "start", "--app", "watched", "--dataset", "rows", "--sites", "kind=hospital", "--watch",
            "--coordinator", coordinator.address, "--data-dir", str(coordinator.layout.root)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "failed: the ServerApp raised ValueError: the strategy cannot start" in result.output
