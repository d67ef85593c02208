"""The registry's commands as an operator and a site admin with change control use them."""

import json
import subprocess
import sys

import numpy as np

from tests.e2e.test_cli import ENV, cli, served, stop  # noqa: F401, F811 - served is a fixture
from tests.onnx_builders import linear_model
from tests.support import wait_for


def test_push_rollout_approve_and_clear_errors(served, tmp_path):  # noqa: F811
    data, coordinator = served
    d = ["--data-dir", str(data)]
    added = json.loads(
        cli("cloud-coordinator", "sites", "add", "hospital-a", "--kind", "hospital", *d, "--json").stdout
    )
    agent_dir = tmp_path / "agent"
    cli("edge-agent", "enroll", "--coordinator", added["coordinator_address"], "--enroll-address",
        added["enroll_address"], "--token", added["token"], "--ca-fingerprint", added["ca_fingerprint"],
        "--data-dir", str(agent_dir))  # fmt: skip
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--data-dir", str(agent_dir), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "agent.log").open("wb"),
        env={**ENV, "SILOLINK_AGENT_REGISTRY__REQUIRE_APPROVAL": "true"},
    )
    try:
        model = linear_model(tmp_path / "risk.onnx", np.eye(3, 2, dtype=np.float32))
        pushed = json.loads(
            cli("cloud-coordinator", "models", "push", str(model), "--name", "risk", *d, "--json").stdout
        )
        assert pushed["version"] == "1" and len(pushed["sha256"]) == 64
        assert "risk" in cli("cloud-coordinator", "models", "list", *d).stdout
        assert "manifest" in cli("cloud-coordinator", "models", "show", "risk:1", *d).stdout

        junk = tmp_path / "junk.onnx"
        junk.write_bytes(b"junk")
        failed = cli("cloud-coordinator", "models", "push", str(junk), "--name", "junk", *d, check=False)
        assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "not a valid ONNX" in failed.stderr
        failed = cli("cloud-coordinator", "models", "rollout", "risk:1", "--to", "site=nowhere", *d, check=False)
        assert failed.returncode == 3 and failed.stderr.strip() == (
            "error: no site named 'nowhere'; `cloud-coordinator sites list` shows them"
        )

        wait_for(lambda: "online" in cli("cloud-coordinator", "sites", "list", *d).stdout, 20, "site online")
        cli("cloud-coordinator", "models", "rollout", "risk:1", "--to", "kind=hospital", *d)

        def state():
            sites = json.loads(cli("cloud-coordinator", "models", "status", "risk:1", *d, "--json").stdout)
            return sites[0]["state"]

        wait_for(lambda: state() == "awaiting_approval", 20, "awaiting approval")
        orders = json.loads(cli("edge-agent", "models", "orders", "--data-dir", str(agent_dir), "--json").stdout)
        assert [(o["name"], o["state"]) for o in orders] == [("risk", "awaiting_approval")]
        cli("edge-agent", "models", "approve", "risk:1", "--data-dir", str(agent_dir))
        wait_for(lambda: state() == "active", 20, "active")
        watched = cli("cloud-coordinator", "models", "status", "risk:1", "--watch", "--interval", "0.2", *d).stdout
        assert "1 site(s): active 1" in watched and "hospital-a" in watched
        installed = json.loads(cli("edge-agent", "models", "list", "--data-dir", str(agent_dir), "--json").stdout)
        assert [(m["name"], m["version"], m["source"], m["active"]) for m in installed] == [
            ("risk", "1", "registry", True)
        ]
        failed = cli("edge-agent", "models", "approve", "risk:1", "--data-dir", str(agent_dir), check=False)
        assert failed.returncode == 3 and "no order for risk:1 awaits approval" in failed.stderr
    finally:
        assert stop(agent) == 0
