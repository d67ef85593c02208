"""The command-line tools fail in one line a user can act on, never in a Python traceback."""

from __future__ import annotations

import pytest

from tests.e2e.test_cli import cli


@pytest.mark.parametrize(
    "tool, command, file, setting, shown",
    [
        ("cloud-coordinator", "serve", "coordinator.toml", "max_workers = 0", "max_workers = 0"),
        ("cloud-coordinator", "serve", "coordinator.toml", "max_message_bytes = 1e30", "max_message_bytes = 1e+30"),
        ("cloud-coordinator", "serve", "coordinator.toml", 'log_level = "LOUD"', "log_level = 'LOUD'"),
        ("edge-agent", "run", "agent.toml", "local_max_workers = 0", "local_max_workers = 0"),
        ("edge-agent", "run", "agent.toml", "[inference]\nmax_batch_rows = 0", "[inference] max_batch_rows = 0"),
    ],
)
def test_daemons_refuse_a_bad_setting_in_one_line(tmp_path, tool, command, file, setting, shown):
    data = tmp_path / "data"
    data.mkdir()
    (data / file).write_text(setting + "\n")
    proc = cli(tool, command, "--data-dir", str(data), check=False)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {data / file}: {shown}: use "), line


def test_a_bad_command_line_override_is_one_line_too(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = cli("cloud-coordinator", "serve", "--data-dir", str(data), "--log-level", "LOUD", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: command line: log_level = 'LOUD': use one of DEBUG, INFO")
    assert len(proc.stderr.splitlines()) == 1
