import dataclasses

import pytest

from silolink import config, errors, settings
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


# Issue 15 item 6: every setting declares what it may hold, and a bad value is one line
# naming the file, the key with its table, the value and what is allowed.
AGENT_CASES = [
    ("local_max_workers = 0", "local_max_workers = 0"),
    ("local_max_workers = -3", "local_max_workers = -3"),
    ("max_message_bytes = 1e30", "max_message_bytes = 1e+30"),
    ('log_level = "LOUD"', "log_level = 'LOUD'"),
    ("shutdown_grace_s = -1", "shutdown_grace_s = -1"),
    ("reconnect_initial_s = nan", "reconnect_initial_s = nan"),
    ("reconnect_initial_s = inf", "reconnect_initial_s = inf"),
    ("[inference]\nmax_batch_rows = 0", "[inference] max_batch_rows = 0"),
    ("[inference]\nmax_request_rows = -1", "[inference] max_request_rows = -1"),
    ('[exchange]\nsuite = "ROT13"', "[exchange] suite = 'ROT13'"),
    ('[exchange]\ninbox_dir = "../../etc"', "[exchange] inbox_dir = '../../etc'"),
    ('[catalog]\nshare_with_coordinator = "everything"', "[catalog] share_with_coordinator = 'everything'"),
    ('[training]\ndatasets = ["x; DROP TABLE"]', "[training] datasets = ['x; DROP TABLE']"),
    ('local_listen = "0.0.0.0:99999"', "local_listen = '0.0.0.0:99999'"),
    ("max_message_bytes = 1.5", "max_message_bytes = 1.5"),
]
COORDINATOR_CASES = [
    ("max_workers = 0", "max_workers = 0"),
    ("heartbeat_interval_s = 0", "heartbeat_interval_s = 0"),
    ("heartbeat_interval_s = -1", "heartbeat_interval_s = -1"),
    ("stale_after_s = nan", "stale_after_s = nan"),
    ("token_ttl_s = -5", "token_ttl_s = -5"),
    ("max_message_bytes = 1e30", "max_message_bytes = 1e+30"),
    ("max_message_bytes = inf", "max_message_bytes = inf"),
    ('log_level = "LOUD"', "log_level = 'LOUD'"),
    ("[exchange]\nmax_envelope_bytes = -1", "[exchange] max_envelope_bytes = -1"),
    ("[exchange]\ncommit_batch_max = 0", "[exchange] commit_batch_max = 0"),
    ("hostnames = []", "hostnames = []"),
    ("heartbeat_interval_s = 60.0", "heartbeat_interval_s = 60.0"),  # not below stale_after_s (45)
]


@pytest.mark.parametrize(
    "cls, name, text, shown",
    [(AgentConfig, "agent.toml", *case) for case in AGENT_CASES]
    + [(CoordinatorConfig, "coordinator.toml", *case) for case in COORDINATOR_CASES],
)
def test_out_of_range_values_are_one_line_naming_file_key_value_and_what_is_allowed(tmp_path, cls, name, text, shown):
    path = tmp_path / name
    path.write_text(text + "\n")
    with pytest.raises(errors.InvalidArgument) as caught:
        config.load(cls, path, "SILOLINK_X", {})
    message = caught.value.message
    assert message.startswith(f"{path}: {shown}: use "), message
    assert "\n" not in message


def test_environment_values_are_checked_too_and_name_the_variable():
    with pytest.raises(errors.InvalidArgument) as caught:
        config.load(AgentConfig, None, "SILOLINK_AGENT", {"SILOLINK_AGENT_INFERENCE__MAX_BATCH_ROWS": "0"})
    assert caught.value.message == (
        "environment SILOLINK_AGENT_INFERENCE__MAX_BATCH_ROWS = '0': use a number from 1 to 1,000,000"
    )


def test_command_line_overrides_are_checked():
    with pytest.raises(errors.InvalidArgument, match=r"^command line: log_level = 'LOUD': use one of DEBUG, INFO"):
        config.override(AgentConfig(), log_level="LOUD")
    assert config.override(AgentConfig(), log_level="debug", local_listen=None).log_level == "debug"


def test_every_setting_declares_what_it_may_hold():
    for cls in (AgentConfig, CoordinatorConfig):
        cls()  # the defaults pass their own checks
        for key, field in settings.declared(cls):
            allowed = field.metadata.get("allowed")
            assert allowed is not None, f"{cls.__name__}.{key} has no declared range: declare it with setting(...)"
            assert allowed.describe().startswith("use "), key
            if "int" in str(field.type) or "float" in str(field.type):
                assert allowed.min is not None and allowed.max is not None, key
            if "str" in str(field.type):
                assert allowed.choices is not None or allowed.kind is not None, key


def test_every_table_checks_itself_when_built():
    def tables(cls):
        yield cls
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(field.default_factory if callable(field.default_factory) else None):
                yield from tables(field.default_factory)

    for root in (AgentConfig, CoordinatorConfig):
        for table in tables(root):
            assert issubclass(table, settings.Settings), f"{table.__name__} must subclass silolink.settings.Settings"


def test_declaring_a_setting_without_a_range_is_refused():
    with pytest.raises(TypeError, match="min and max"):
        settings.setting(3)
    with pytest.raises(TypeError, match="choices or a kind"):
        settings.setting("x")
    with pytest.raises(TypeError, match="max_items"):
        settings.setting((), kind=settings.HOSTNAME)
