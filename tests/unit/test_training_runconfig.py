"""A job's run_config: the app's defaults with the overrides on top, each key declared and typed;
and the round records the job process builds from what its strategy ran (no sockets)."""

from __future__ import annotations

import click
import pytest
from flwr.app import Message, RecordDict

from cloud_coordinator.cli.training import RunConfigItem
from cloud_coordinator.training import runconfig
from cloud_coordinator.training.recorder import RoundRecorder
from cloud_coordinator.training.store import JobSpec
from silolink import errors

DEFAULTS = {"num-server-rounds": 3, "lr": 0.1, "mode": "fast", "verbose": False}


def spec(**fields) -> JobSpec:
    return JobSpec(app="my-app", dataset="d", sites=("all",), **fields)


def test_overrides_go_on_top_of_the_defaults_and_keep_the_declared_types():
    config = runconfig.effective("my-app:1", DEFAULTS, spec(run_config={"lr": 1, "mode": "slow"}, rounds=5))
    assert config == {"num-server-rounds": 5, "lr": 1.0, "mode": "slow", "verbose": False}
    assert isinstance(config["lr"], float)
    assert runconfig.effective("my-app:1", DEFAULTS, spec()) == DEFAULTS


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"run_config": {"epochs": 2}}, "--run-config epochs: app my-app:1 does not declare run_config key 'epochs'"),
        ({"strategy": "fedprox"}, "--strategy: app my-app:1 does not declare run_config key 'strategy'"),
        ({"run_config": {"verbose": 1}}, "verbose is declared as bool"),
        ({"run_config": {"num-server-rounds": 2.5}}, "num-server-rounds is declared as int"),
        ({"run_config": {"lr": float("inf")}}, "is not a finite number"),
        ({"rounds": 4, "run_config": {"num-server-rounds": 5}}, "given twice"),
    ],
)
def test_undeclared_keys_and_wrong_types_are_refused(fields, reason):
    with pytest.raises(errors.InvalidArgument, match=reason):
        runconfig.effective("my-app:1", DEFAULTS, spec(**fields))


def test_run_config_items_are_read_as_toml_like_flwr_run():
    item = RunConfigItem()
    assert item.convert("num-server-rounds=5", None, None) == ("num-server-rounds", 5)
    assert item.convert("lr=0.05", None, None) == ("lr", 0.05)
    assert item.convert('mode="slow"', None, None) == ("mode", "slow")
    assert item.convert("mode=slow", None, None) == ("mode", "slow")  # not TOML: taken as text
    assert item.convert("verbose=true", None, None) == ("verbose", True)
    with pytest.raises(click.BadParameter, match="not KEY=VALUE"):
        item.convert("no-equals", None, None)
    with pytest.raises(click.BadParameter, match="numbers, booleans or text"):
        item.convert("x=[1, 2]", None, None)


def message(kind: str, group: str = "") -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return Message(RecordDict(), dst_node_id=5, message_type=kind, group_id=group)


def test_rounds_are_recorded_as_the_strategy_ran_them():
    sent = []
    clock = iter(range(100))
    recorder = RoundRecorder(sent.append, clock=lambda: float(next(clock)))
    recorder.begin(1)  # a message-API strategy: group ids are empty, the round comes from the strategy
    recorder.outcome(message("train"), "site-a", None)
    recorder.outcome(message("train"), "site-b", "the app reported an error: ValueError")
    recorder.metrics(1, "train", {"loss": 0.5, "num-examples": 10, "hist": [1, 2], "ok": True}, shifted=True)
    recorder.outcome(message("evaluate"), "site-a", None)
    recorder.metrics(1, "evaluate", {"eval_loss": float("nan"), "eval_accuracy": 0.9}, shifted=True)
    recorder.flush()
    (record,) = sent
    assert record["round"] == 1 and record["participants"] == ["site-a"]
    assert record["excluded"] == [
        {"site": "site-b", "reason": "the app reported an error: ValueError", "message_type": "train"}
    ]
    assert record["train_metrics"] == {"loss": 0.5, "num-examples": 10.0}  # numbers only
    assert record["eval_metrics"] == {"eval_accuracy": 0.9}  # NaN left out
    assert record["duration_s"] > 0
    recorder.offset = 4  # resumed after round 4 from an explicit checkpoint: legacy group ids count again from 1
    recorder.outcome(message("train", group="1"), "site-a", None)
    recorder.flush()
    assert sent[-1]["round"] == 5
    recorder.outcome(message("query.stats", group="0"), "site-a", None)
    recorder.flush()
    assert sent[-1]["round"] == 5  # round 0 (before the first round) is no round
