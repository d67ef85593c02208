import dataclasses

import pytest

from silolink import config, errors
from silolink.config import AgentConfig, CoordinatorConfig


def test_toml_then_environment_overrides(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text('listen = "127.0.0.1:9000"\nheartbeat_interval_s = 3.0\nhostnames = ["a", "b"]\n')
    cfg = config.load(
        CoordinatorConfig,
        path,
        "SILOLINK_COORDINATOR",
        {"SILOLINK_COORDINATOR_HEARTBEAT_INTERVAL_S": "7.5", "SILOLINK_COORDINATOR_HOSTNAMES": "x, y"},
    )
    assert cfg.listen == "127.0.0.1:9000"
    assert cfg.heartbeat_interval_s == 7.5
    assert cfg.hostnames == ("x", "y")
    assert cfg.token_ttl_s == CoordinatorConfig().token_ttl_s


def test_dump_round_trips(tmp_path):
    cfg = dataclasses.replace(AgentConfig(), site="hospital-a", coordinator="c:7443", allow_remote_local_api=True)
    path = tmp_path / "agent.toml"
    path.write_text(config.dump(cfg))
    assert config.load(AgentConfig, path, "SILOLINK_AGENT", {}) == cfg


def test_unknown_setting_is_an_error_naming_it(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text("heartbeat_intervall_s = 3\n")
    with pytest.raises(errors.InvalidArgument, match="heartbeat_intervall_s"):
        config.load(AgentConfig, path, "SILOLINK_AGENT", {})


@pytest.mark.parametrize(
    "env",
    [{"SILOLINK_AGENT_RECONNECT_MAX_S": "soon"}, {"SILOLINK_AGENT_ALLOW_REMOTE_LOCAL_API": "maybe"}],
)
def test_bad_values_are_errors_naming_the_setting(env):
    with pytest.raises(errors.InvalidArgument, match=next(iter(env))):
        config.load(AgentConfig, None, "SILOLINK_AGENT", env)


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text("site = \n")
    with pytest.raises(errors.InvalidArgument, match="agent.toml"):
        config.load(AgentConfig, path, "SILOLINK_AGENT", {})


def test_nested_tables_and_their_environment_overrides():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        max_batch: int = 8

    @dataclasses.dataclass(frozen=True)
    class Outer:
        name: str = ""
        inner: Inner = Inner()

    cfg = config._build(Outer, {"inner": {"max_batch": 4}}, "X_", {"X_INNER__MAX_BATCH": "16"}, "test")
    assert cfg.inner.max_batch == 16
