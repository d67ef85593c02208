"""The systemd units and the agent's install script, checked with systemd's own tools
where this machine has them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .helpers import BIN, DEPLOY, clean_environ, resolve_cli, unit_settings

UNITS = ["silolink-agent.service", "silolink-coordinator.service"]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


def local_copy(unit: str, tmp_path) -> str:
    """The unit with ExecStart pointing at this virtual environment (verify checks it exists)."""
    text = (DEPLOY / "systemd" / unit).read_text().replace("/opt/silolink/venv/bin/", f"{BIN}/")
    path = tmp_path / unit
    path.write_text(text)
    return str(path)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_cleanly(unit, tmp_path):
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", local_copy(unit, tmp_path)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0 and "Failed to" in proc.stderr and unit not in proc.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()[:200]}")
    # verify only warns about unknown or misspelt settings; any output about our file fails.
    assert proc.returncode == 0 and unit not in proc.stderr, proc.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_stays_low(unit, tmp_path):
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", local_copy(unit, tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in proc.stderr or "Unknown option" in proc.stderr:
        pytest.skip("this systemd-analyze cannot assess unit files offline")
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout).group(1))
    assert level <= 2.0, proc.stdout  # systemd rates 0-10; below 2 is its best band


@pytest.mark.parametrize("unit", UNITS)
def test_unit_runs_a_real_command_unprivileged_and_hardened(unit):
    settings = unit_settings(DEPLOY / "systemd" / unit)
    exec_start = settings["ExecStart"][0].split()
    resolve_cli([exec_start[0].rsplit("/", 1)[1], *exec_start[1:]])
    assert settings["User"][0] not in ("root", "0") and settings["Restart"] == ["on-failure"]
    data_dir = exec_start[exec_start.index("--data-dir") + 1]
    assert settings["ReadWritePaths"] == [data_dir] and data_dir == f"/var/lib/{settings['StateDirectory'][0]}"
    for setting, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings[setting] == [value], setting


def test_agent_unit_is_ready_only_when_connected():
    settings = unit_settings(DEPLOY / "systemd" / "silolink-agent.service")
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]


def test_install_script_is_valid_shell_and_refuses_missing_enrollment_details():
    script = DEPLOY / "systemd" / "install-agent.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
    proc = subprocess.run(
        [str(script), "--dry-run", "--coordinator", "coord.example.org:7443"],
        env=clean_environ(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--ca-fingerprint is required" in proc.stderr


def test_install_script_keeps_the_token_off_the_command_line():
    proc = subprocess.run(
        [
            str(DEPLOY / "systemd" / "install-agent.sh"),
            "--dry-run",
            "--coordinator",
            "coord.example.org:7443",
            "--ca-fingerprint",
            "sha256:" + "ab" * 32,
        ],
        env={**clean_environ(), "SILOLINK_ENROLL_TOKEN": "slt_secret"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "slt_secret" not in proc.stdout
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert any(c.startswith("useradd --system") for c in commands)
    assert any(c.startswith("systemctl enable silolink-agent.service") for c in commands)
    enroll = next(c for c in commands if " enroll " in c).split(" -- ", 1)[1].split()
    resolve_cli([enroll[0].rsplit("/", 1)[1], *enroll[1:]])
