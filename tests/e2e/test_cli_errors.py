"""The command-line tools fail in one line a user can act on, never in a Python traceback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.e2e.test_cli import cli, served  # noqa: F401 - a fixture


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


def test_every_command_fails_in_one_line_and_in_json_with_json(tmp_path):
    # Issue 15 item 8: operator commands without credentials printed a 30-line traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.cli_sweep", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) > 80
    failed = [r for r in results if r["exit_code"] != 0]
    assert len(failed) > 70
    for r in results:
        assert r["crashed"] is None, r
        assert "Traceback" not in r["stderr"], r
    for r in failed:
        lines = r["stderr"].splitlines()
        if r["json"]:
            (line,) = lines
            error = json.loads(line)["error"]
            assert error["code"] and error["message"], r
        elif lines[0].startswith("Usage: "):  # click's own message for a malformed command line
            assert lines[-1].startswith("Error: "), r
        elif lines[-1] == "Aborted!":  # click's own, when a prompt gets no answer
            assert len(lines) == 1 or all(line.endswith(": ") for line in lines[:-1]), r
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), r
        if r["operator"] and r["credentials"]:
            assert f"no operator credentials at {r['credentials']}" in lines[0], r
        elif r["operator"]:
            assert "SILOLINK_OPERATOR_CREDENTIALS" in lines[0] and "--data-dir" in lines[0], r


def test_audit_verify_pins_on_the_operator_machine_and_speaks_json(served, tmp_path):  # noqa: F811
    # Issue 15 item 7, as an operator scripts it.
    data, _ = served
    cli("cloud-coordinator", "sites", "add", "hospital-a", "--kind", "hospital", "--data-dir", str(data))
    cli("cloud-coordinator", "sites", "add", "hospital-b", "--kind", "hospital", "--data-dir", str(data))
    pin = tmp_path / "pins" / "audit.json"
    verify = ("cloud-coordinator", "audit", "verify", "--data-dir", str(data), "--pin-file", str(pin), "--json")
    first = json.loads(cli(*verify).stdout)
    assert first["ok"] and first["first_pin"] and first["head_seq"] >= 2 and pin.exists()
    again = json.loads(cli(*verify).stdout)
    assert not again["first_pin"] and again["pinned_seq_before"] == first["head_seq"]
    conn = sqlite3.connect(data / "state" / "coordinator.db")
    with conn:
        conn.execute("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
    conn.close()
    cut = cli(*verify, check=False)
    assert cut.returncode != 0 and cut.stdout == ""
    error = json.loads(cut.stderr)["error"]
    assert error["code"] == "FAILED_PRECONDITION" and "has been deleted" in error["message"]
