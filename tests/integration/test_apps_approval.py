"""A site approves an app the coordinator offers: it verifies the signed manifest against the
CA it pinned at enrollment, the downloaded bundle against the manifest, and its declared
dependencies against its own environment, and installs all of it or nothing (a real
coordinator and agent over mTLS; `edge-agent apps` as a process)."""

from __future__ import annotations

import json

import pytest

from cloud_coordinator.apps.client import AppsClient as OperatorApps
from edge_agent.apps.approve import approve
from edge_agent.apps.client import AppsClient
from edge_agent.apps.install import limits_of
from edge_agent.apps.store import AppStore
from silolink import errors
from tests import support
from tests.e2e.test_cli import cli
from tests.flower_app_builders import write_app


def push(coordinator, directory) -> dict:
    with support.operator(coordinator) as op:
        return OperatorApps(op).push(directory)


def approve_at(agent, name: str = "probe-app", version: str = "1.0.0", ca_pem: bytes | None = None):
    store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
    with AppsClient(agent.layout, agent.config) as client:
        return approve(store, client, ca_pem or agent.layout.ca_cert.read_bytes(), name, version,
                       limits_of(agent.config.apps))  # fmt: skip


def nothing_installed(agent) -> bool:
    store = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
    return store.list() == [] and not any(p.is_file() for p in agent.layout.apps_dir.rglob("*"))


def test_a_site_lists_what_is_offered_and_approves_exactly_the_signed_bundle(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-a")
    pushed = push(coordinator, write_app(tmp_path))
    d = ["--data-dir", str(agent.layout.root)]
    listed = json.loads(cli("edge-agent", "apps", "list", *d, "--json").stdout)
    assert [(e["name"], e["version"], e["state"], e["sha256"], e["publisher"]) for e in listed] == [
        ("probe-app", "1.0.0", "offered", pushed["sha256"], "tests")
    ]
    assert {f["path"] for f in listed[0]["files"]} >= {"probe_app/client_app.py", "pyproject.toml"}
    assert listed[0]["dependencies"] == ["numpy>=1.26"]
    approved = cli("edge-agent", "apps", "approve", "probe-app:1.0.0", *d).stdout
    assert approved.startswith(f"approved and installed probe-app:1.0.0 (sha256 {pushed['sha256'][:12]}")
    listed = json.loads(cli("edge-agent", "apps", "list", *d, "--json").stdout)
    assert [(e["state"], e["source"], e["offered"]) for e in listed] == [("installed", "coordinator", True)]
    assert "already installed" in cli("edge-agent", "apps", "approve", "probe-app:1.0.0", *d).stdout
    failed = cli("edge-agent", "apps", "approve", "nope:1", *d, check=False)
    assert failed.returncode == 3
    assert failed.stderr == "error: the coordinator offers no app nope:1 to this site (it offers: probe-app:1.0.0)\n"


def test_a_foreign_signer_an_altered_signature_and_a_tampered_bundle_are_refused(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-a")
    pushed = push(coordinator, write_app(tmp_path))
    other_ca = support.init_coordinator(tmp_path / "another-coordinator") / "pki" / "ca.pem"
    with pytest.raises(errors.PermissionDenied, match="not issued by the coordinator CA this site enrolled with"):
        approve_at(agent, ca_pem=other_ca.read_bytes())
    assert nothing_installed(agent)

    conn = coordinator.db.conn
    (signature,) = conn.execute("select manifest_signature from apps_versions where name = 'probe-app'").fetchone()
    with conn:
        conn.execute("update apps_versions set manifest_signature = ? where name = 'probe-app'",
                     [bytes([signature[0] ^ 1]) + signature[1:]])  # fmt: skip
    with pytest.raises(errors.PermissionDenied, match="signature does not verify"):
        approve_at(agent)
    assert nothing_installed(agent)
    with conn:
        conn.execute("update apps_versions set manifest_signature = ? where name = 'probe-app'", [signature])

    blob = coordinator.apps.blob_path(pushed["sha256"])
    original = blob.read_bytes()
    blob.write_bytes(original.replace(b"probe", b"PROBE", 1))  # same size, other bytes
    with pytest.raises(errors.PermissionDenied, match="does not match its signed manifest .* altered"):
        approve_at(agent)
    assert nothing_installed(agent)
    blob.write_bytes(original)
    app, new = approve_at(agent)
    assert new and app.sha256 == pushed["sha256"] and app.source == "coordinator"


def test_missing_dependencies_are_named_and_the_agent_installs_nothing(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-a")
    push(coordinator, write_app(tmp_path, dependencies=["numpy>=1.26", "surely-not-a-package-here>=2"]))
    with pytest.raises(errors.FailedPrecondition) as caught:
        approve_at(agent)
    assert "surely-not-a-package-here>=2 (not installed)" in caught.value.message
    assert "numpy" not in caught.value.message.split("lacks:")[1].split(".")[0]
    assert "the agent installs nothing itself" in caught.value.message
    assert nothing_installed(agent)
