"""`edge-agent enroll` finds the enrollment listener wherever `serve --listen` puts the
coordinator, and `sites add` prints the exact enroll command (issue 15 item 9)."""

from __future__ import annotations

import json
import shlex
import socket

from tests.e2e.test_cli import cli, spawn, stop
from tests.support import wait_for


def two_free_ports() -> int:
    """A port P such that P and P + 1 are free now (chosen by the kernel, not fixed)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports")


def test_enroll_defaults_agree_with_serve_listen_and_sites_add_prints_the_command(tmp_path):
    data = tmp_path / "coord"
    cli("cloud-coordinator", "init", "--data-dir", str(data))
    port = two_free_ports()
    process = spawn(
        "cloud_coordinator",
        *("serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--metrics-listen", ""),
        log=tmp_path / "coord.log",
    )
    try:
        wait_for(lambda: (data / "run" / "endpoints.json").exists(), 20, "coordinator to start")
        ends = json.loads((data / "run" / "endpoints.json").read_text())
        assert ends["address"] == f"127.0.0.1:{port}" and ends["enroll_address"] == f"127.0.0.1:{port + 1}"

        # The printed command names both addresses, exactly as a site admin pastes it.
        added = cli("cloud-coordinator", "sites", "add", "hospital-a", "--kind", "hospital", "--data-dir", str(data))
        (line,) = [x.strip() for x in added.stdout.splitlines() if x.strip().startswith("edge-agent enroll ")]
        assert f"--coordinator 127.0.0.1:{port} --enroll-address 127.0.0.1:{port + 1} " in line
        args = shlex.split(line.replace("/var/lib/silolink", str(tmp_path / "a")))
        cli(*args)

        # Without --enroll-address, enroll's default finds the same listener.
        b = json.loads(
            cli(
                *("cloud-coordinator", "sites", "add", "hospital-b", "--kind", "hospital", "--data-dir", str(data)),
                "--json",
            ).stdout
        )
        enrolled = cli(
            *("edge-agent", "enroll", "--coordinator", f"127.0.0.1:{port}", "--token", b["token"]),
            *("--ca-fingerprint", b["ca_fingerprint"], "--data-dir", str(tmp_path / "b"), "--json"),
        )
        assert json.loads(enrolled.stdout)["site"] == "hospital-b"
    finally:
        assert stop(process) == 0
