"""The exchange and audit commands as a site admin and an operator type them (click's
runner against a real coordinator and agents)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cloud_coordinator.cli import main as coordinator_cli
from edge_agent.cli import main as agent_cli
from tests.integration.exchange_world import start_world


def run(cli, *args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_send_inbox_receive_agreements_and_audit_from_the_command_line(tmp_path):
    world = start_world(tmp_path / "world")
    try:
        for name in ("hospital-a", "hospital-b"):
            world.add_site(name)
            world.wait_published(name)
        a_dir, b_dir = world.agents["hospital-a"].layout.root, world.agents["hospital-b"].layout.root
        op = ["--data-dir", world.coordinator.layout.root, "--coordinator", world.coordinator.address]
        added = json.loads(
            run(
                coordinator_cli,
                "agreements",
                "add",
                "--from",
                "hospital-a",
                "--to",
                "hospital-b",
                "--purpose",
                "referral",
                "--json",
                *op,
            ).output
        )
        assert added["state"] == "pending"
        letter = tmp_path / "letter.txt"
        letter.write_text("dear colleague")
        refused = run(
            agent_cli, "send", letter, "--to", "hospital-b", "--purpose", "referral", "--data-dir", a_dir, ok=False
        )
        assert refused.exit_code == 5 and "error: no active agreement" in refused.output
        run(agent_cli, "agreements", "accept", added["id"], "--data-dir", b_dir)
        listed = json.loads(run(agent_cli, "agreements", "list", "--json", "--data-dir", a_dir).output)
        assert [(a["id"], a["state"]) for a in listed] == [(added["id"], "active")]

        sent = json.loads(
            run(
                agent_cli, "send", letter, "--to", "hospital-b", "--purpose", "referral", "--json", "--data-dir", a_dir
            ).output
        )
        inbox = json.loads(run(agent_cli, "inbox", "--json", "--data-dir", b_dir).output)
        assert [e["envelope_id"] for e in inbox] == [sent["envelope_id"]]
        out = tmp_path / "received.txt"
        text = run(agent_cli, "receive", sent["envelope_id"], "--output", out, "--data-dir", b_dir).output
        assert "verified sender signature" in text and out.read_text() == "dear colleague"
        assert "ENVELOPE" in run(agent_cli, "inbox", "--data-dir", b_dir).output

        keys = json.loads(run(agent_cli, "keys", "list", "--json", "--data-dir", b_dir).output)
        assert [k["current"] for k in keys] == [True]
        assert "audit chain verified" in run(coordinator_cli, "audit", "verify", *op).output
        assert json.loads(run(agent_cli, "audit", "verify", "--json", "--data-dir", b_dir).output)["ok"]
        actions = [e["action"] for e in json.loads(run(coordinator_cli, "audit", "list", "--json", *op).output)]
        assert "envelope.deliver" in actions and "agreement.accept" in actions
    finally:
        world.stop()
