"""The app registry end to end: Flower app bundles pushed by an operator, checked, stored by
hash and signed; offered to agents over mTLS, downloaded in chunks, verified against the CA."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest

from cloud_coordinator.apps.client import AppsClient
from edge_agent.identity import load_identity
from silolink import errors, manifests, model_chunks
from silolink.apps import fab
from silolink.config import CoordinatorAppsConfig
from silolink.gen.apps.v1 import apps_pb2 as pb
from silolink.gen.apps.v1 import apps_pb2_grpc
from silolink.rpc.channels import mtls_channel
from tests import support
from tests.flower_app_builders import rezip, symlink_entry, write_app


def agent_stub(agent, coordinator):
    channel = mtls_channel(coordinator.address, load_identity(agent.layout).credentials)
    return channel, apps_pb2_grpc.AppDistributionServiceStub(channel)


def download(stub, name: str, version: str, offset: int = 0) -> bytes:
    return b"".join(bytes(model_chunks.decode(r.SerializeToString())[1]) for r in
                    stub.DownloadApp(pb.DownloadAppRequest(name=name, version=version, offset=offset)))  # fmt: skip


def test_push_list_show_offer_and_download(coordinator, make_agent, tmp_path):
    app_dir = write_app(tmp_path, "numpy-test", config={"num-server-rounds": 3, "lr": 0.1, "mode": "fast"})
    agent = make_agent("hospital-a")
    with support.operator(coordinator) as op:
        client = AppsClient(op)
        pushed = client.push(app_dir)
        data = fab.build_fab(app_dir)  # Flower's builder is deterministic: the same bytes, the same hash
        assert pushed["created"] and pushed["sha256"] == hashlib.sha256(data).hexdigest()
        assert (pushed["name"], pushed["version"], pushed["publisher"]) == ("numpy-test", "1.0.0", "tests")
        assert pushed["config"] == {"num-server-rounds": 3, "lr": 0.1, "mode": "fast"}
        assert pushed["serverapp"] == "numpy_test.server_app:app" and pushed["dependencies"] == ["numpy>=1.26"]
        assert {f["path"] for f in pushed["files"]} >= {"numpy_test/server_app.py", "pyproject.toml"}
        fab_file = tmp_path / "app.fab"
        fab_file.write_bytes(data)
        again = client.push(fab_file)  # the same bundle, as a .fab: nothing changes
        assert not again["created"] and again["sha256"] == pushed["sha256"]
        changed = write_app(tmp_path / "v2", "numpy-test", config={"num-server-rounds": 5, "lr": 0.1, "mode": "fast"})
        with pytest.raises(errors.AlreadyExists, match="raise \\[project\\] version"):
            client.push(changed)
        client.push(write_app(tmp_path, "numpy-test", version="1.1.0"))
        listed = client.list()
        assert [(a["name"], a["version"]) for a in listed if not a["builtin"]] == [
            ("numpy-test", "1.0.0"),
            ("numpy-test", "1.1.0"),
        ]
        # The built-in apps are listed too, before any job used them (the console offers them).
        assert {a["name"] for a in listed if a["builtin"]} == {"tabular", "tabular-secagg"}
        (shown,) = client.show("numpy-test", "1.0.0")
        with pytest.raises(errors.NotFound, match="has no version '9'; published: 1.0.0, 1.1.0"):
            client.show("numpy-test", "9")
    ca_pem = coordinator.layout.ca_cert.read_bytes()
    entry = [e for e in coordinator.audit.entries() if e.action == "app.push"][0]
    assert entry.subject == "numpy-test:1.0.0" and entry.details["sha256"] == pushed["sha256"]
    assert entry.actor == "operator:admin"

    channel, stub = agent_stub(agent, coordinator)
    with channel:
        offered = stub.ListOfferedApps(pb.ListOfferedAppsRequest())
        first = next(a for a in offered.apps if a.version == "1.0.0")
        fields = manifests.verify_app(first.manifest, first.manifest_signature, offered.signer_certificate_pem, ca_pem)
        assert fields["sha256"] == pushed["sha256"] and fields["config"]["lr"] == 0.1
        assert shown["manifest"] == first.manifest.decode()
        with pytest.raises(errors.PermissionDenied, match="altered"):
            manifests.verify_app(first.manifest.replace(b'"lr":0.1', b'"lr":0.2'), first.manifest_signature,
                                 offered.signer_certificate_pem, ca_pem)  # fmt: skip
        body = download(stub, "numpy-test", "1.0.0")
        assert hashlib.sha256(body).hexdigest() == pushed["sha256"]
        assert download(stub, "numpy-test", "1.0.0", offset=100) == body[100:]  # resumes from an offset
        with pytest.raises(grpc.RpcError) as missing:
            download(stub, "numpy-test", "7.0.0")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as denied:  # a site cannot publish
            apps_pb2_grpc.AppRegistryServiceStub(channel).ListApps(pb.ListAppsRequest())
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with support.operator(coordinator) as op:  # an operator is no site: no downloads
        with pytest.raises(grpc.RpcError) as denied:
            download(apps_pb2_grpc.AppDistributionServiceStub(op.channel), "numpy-test", "1.0.0")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_bad_bundles_are_refused_with_the_reason_and_leave_nothing(tmp_path):
    coordinator = support.start_coordinator(tmp_path / "c", apps=CoordinatorAppsConfig(max_bundle_bytes=64 * 1024))
    try:
        good = fab.build_fab(write_app(tmp_path, "clean"))
        link_dir = write_app(tmp_path, "linked")
        (link_dir / "linked" / "data.py").symlink_to("/etc/hostname")

        def tampered(name, content):
            return b"import os\n" if name == "clean/server_app.py" else content

        cases = {
            "traversal": (rezip(good, add={"../evil.py": b"x = 1\n"}), "outside its root"),
            "absolute": (rezip(good, add={"/etc/evil.py": b"x = 1\n"}), "absolute path"),
            "symlink": (rezip(good, entries=[symlink_entry("clean/link.py", "/etc/passwd")]), "symlink"),
            "tampered": (rezip(good, change=tampered), "does not match"),
            "oversize": (rezip(good, add={"clean/big.py": os.urandom(200_000)}), "over the limit"),
            "not a zip": (b"PK not really", "not a zip archive"),
        }
        with support.operator(coordinator) as op:
            client = AppsClient(op)
            for case, (data, reason) in cases.items():
                path = tmp_path / f"{case.replace(' ', '-')}.fab"
                path.write_bytes(data)
                with pytest.raises(errors.InvalidArgument, match=reason):
                    client.push(path)
            with pytest.raises(errors.InvalidArgument, match="symlinks"):
                client.push(link_dir)  # refused before building, naming the link
            with pytest.raises(errors.InvalidArgument, match="taken by silolink's built-in app"):
                client.push(write_app(tmp_path, "tabular", version="9.0.0"))
            listed = client.list()
            assert [a for a in listed if not a["builtin"]] == []  # nothing of the bad bundles
        blobs = coordinator.layout.root / "apps" / "blobs"
        # Only the built-in apps' bundles (published when listed), nothing of the bad ones.
        assert sorted(p.name for p in blobs.iterdir()) == sorted(f"{a['sha256']}.fab" for a in listed)
        assert not [e for e in coordinator.audit.entries() if e.action == "app.push" and e.actor != "coordinator"]
    finally:
        coordinator.stop(0)


def test_the_apps_commands(coordinator, tmp_path):
    import json

    from click.testing import CliRunner

    from cloud_coordinator.cli import main

    app_dir = write_app(tmp_path, "cli-app")
    d = ["--data-dir", str(coordinator.layout.root)]
    pushed = CliRunner().invoke(main, ["apps", "push", str(app_dir), "--json", *d])
    assert pushed.exit_code == 0, pushed.output
    printed = json.loads(pushed.output)
    assert (printed["name"], printed["version"], len(printed["sha256"])) == ("cli-app", "1.0.0", 64)
    listed = CliRunner().invoke(main, ["apps", "list", *d])
    assert "cli-app" in listed.output and printed["sha256"][:12] in listed.output
    shown = CliRunner().invoke(main, ["apps", "show", "cli-app:1.0.0", *d])
    assert "serverapp cli_app.server_app:app" in shown.output and "config mode = 'fast'" in shown.output
    missing = CliRunner().invoke(main, ["apps", "show", "nope", *d])
    assert missing.exit_code != 0 and "error: no app named 'nope' is published" in missing.output
