"""The model registry end to end: real coordinator, real agents, real mTLS, real ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_coordinator.registry.client import RegistryClient
from edge_agent.identity import load_identity
from edge_agent.registry.orders import OrderStore
from silolink import errors
from silolink.config import RegistryConfig
from silolink.gen.common.v1 import site_pb2
from silolink.gen.registry.v1 import registry_pb2 as pb
from silolink.gen.registry.v1 import registry_pb2_grpc
from silolink.rpc.channels import mtls_channel
from tests import support
from tests.onnx_builders import linear_model, mlp_model


def model_file(tmp_path, name: str, scale: float = 1.0):
    weights = np.array([[1, 0], [0, 1], [1, 1]], np.float32) * scale
    return linear_model(tmp_path / f"{name}.onnx", weights)


def wait_state(client: RegistryClient, name: str, version: str, site: str, state: str, timeout_s: float = 15):
    def reached():
        found = {s["site"]: s for s in client.status(name, version)}
        return found.get(site) if found.get(site, {}).get("state") == state else None

    return support.wait_for(reached, timeout_s, f"{site} {state} on {name}:{version}")


def leftovers(agent) -> list[str]:
    root = agent.layout.root / "registry"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_push_rollout_to_hospitals_and_status(coordinator, make_agent, tmp_path):
    a = make_agent("hospital-a")
    b = make_agent("hospital-b")
    f = make_agent("factory-a", kind="factory")
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        pushed = client.push(model_file(tmp_path, "risk"), "risk", description="first")
        assert pushed["version"] == "1" and pushed["creator"] == "operator:admin"
        assert pushed["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 3]}]
        assert client.push(model_file(tmp_path, "risk2", 2.0), "risk")["version"] == "2"
        rollout = client.rollout("risk", "1", ["kind=hospital"])
        assert [s["site"] for s in rollout["sites"]] == ["hospital-a", "hospital-b"]
        for site in ("hospital-a", "hospital-b"):
            done = wait_state(client, "risk", "1", site, "active")
            assert done["bytes_received"] == pushed["size_bytes"]
        assert [s["site"] for s in client.status("risk", "1")] == ["hospital-a", "hospital-b"]
        shown = client.show("risk", "1")[0]
        assert '"sha256":"' + pushed["sha256"] in shown["manifest"]
    for agent in (a, b):
        record = agent.models.get("risk")
        assert (record.version, record.source, record.sha256) == ("1", "registry", pushed["sha256"])
        assert leftovers(agent) == []
    with pytest.raises(errors.NotFound):
        f.models.get("risk")
    actions = [e.action for e in coordinator.audit.entries()]
    assert actions.count("model.push") == 2 and "model.rollout" in actions
    coordinator.audit.verify()


def test_bad_models_and_targets_are_refused_with_nothing_left(coordinator, make_agent, tmp_path):
    make_agent("hospital-a")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    blobs = coordinator.layout.root / "registry" / "blobs"
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        with pytest.raises(errors.InvalidArgument, match="not a valid ONNX model"):
            client.push(junk, "junk")
        assert client.list() == [] and list(blobs.iterdir()) == []
        client.push(model_file(tmp_path, "m"), "m", version="7")
        with pytest.raises(errors.AlreadyExists, match="already registered"):
            client.push(model_file(tmp_path, "m"), "m", version="7")
        with pytest.raises(errors.NotFound, match="no site named 'nowhere'"):
            client.rollout("m", "7", ["site=nowhere"])
        with pytest.raises(errors.InvalidArgument, match="kind=factory matches no site"):
            client.rollout("m", "7", ["kind=factory"])
        with pytest.raises(errors.InvalidArgument, match="region=north matches no site"):
            client.rollout("m", "7", ["region=north"])
        with pytest.raises(errors.InvalidArgument, match="--to 'kind=zoo': kind must be one of"):
            client.rollout("m", "7", ["kind=zoo"])
        with pytest.raises(errors.NotFound, match="has no version '8'"):
            client.rollout("m", "8", ["kind=hospital"])
        # The selectors queries use: every term must match; a site added but not yet
        # enrolled is included (it gets the order when it connects).
        op.add_site("hospital-n", "hospital", {"region": "north"})
        rollout = client.rollout("m", "7", ["kind=hospital,region=north"])
        assert [s["site"] for s in rollout["sites"]] == ["hospital-n"]
        client.deprecate("m", "7")
        with pytest.raises(errors.FailedPrecondition, match="deprecated"):
            client.rollout("m", "7", ["kind=hospital"])
    assert len(list(blobs.iterdir())) == 1


def test_cut_download_resumes_from_last_offset(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-a", registry=RegistryConfig(retry_initial_s=0.05, retry_max_s=0.2))
    coordinator.distribution.chunk_bytes = 64 * 1024
    coordinator.distribution.break_after_chunks = 3
    big = mlp_model(tmp_path / "big.onnx", [256, 512, 2])  # about 520 KB: 9 chunks
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        pushed = client.push(big, "big")
        client.rollout("big", "1", ["site=hospital-a"])
        wait_state(client, "big", "1", "hospital-a", "active")
    offsets = [r[3] for r in coordinator.distribution.requests if r[1] == "big"]
    assert offsets == [0, 3 * 64 * 1024]
    assert agent.models.get("big").sha256 == pushed["sha256"]
    assert leftovers(agent) == []


def test_an_order_is_retried_after_transient_errors_and_fails_only_on_a_final_one(coordinator, make_agent, tmp_path):
    # A busy coordinator (its bulk class full) or one restarting answers RESOURCE_EXHAUSTED
    # or UNAVAILABLE: the site waits and tries again; before, RESOURCE_EXHAUSTED failed the order.
    agent = make_agent("hospital-a", registry=RegistryConfig(retry_initial_s=0.05, retry_max_s=0.2))
    faults = coordinator.distribution.refuse_next
    faults.extend([errors.ResourceExhausted("busy: 256 bulk calls in progress"), errors.Unavailable("restarting")] * 2)
    model = mlp_model(tmp_path / "m.onnx", [4, 8, 2])
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        client.push(model, "m")
        client.rollout("m", "1", ["site=hospital-a"])
        wait_state(client, "m", "1", "hospital-a", "active")
        downloads = [r for r in coordinator.distribution.requests if r[1] == "m"]
        assert len(downloads) == 5 and not faults  # four refused, the fifth delivered the file
        assert agent.models.get("m").version == "1"
        # A final error (the site is not allowed the file) fails the order at once.
        faults.append(errors.PermissionDenied("site hospital-a has no order for model m:2"))
        client.push(model, "m", version="2")
        client.rollout("m", "2", ["site=hospital-a"])
        failed = wait_state(client, "m", "2", "hospital-a", "failed")
        assert "no order for model m:2" in failed["reason"]
    assert leftovers(agent) == []


def test_a_rollout_is_accepted_at_once_and_delivered_a_few_sites_at_a_time(tmp_path):
    import dataclasses

    from silolink.config import CoordinatorLimitsConfig

    limits = dataclasses.replace(CoordinatorLimitsConfig(), rollout_concurrency=1)
    coordinator = support.start_coordinator(tmp_path / "c", limits=limits)
    agents = []
    try:
        for name in ("hospital-a", "hospital-b", "hospital-c"):
            support.enroll_site(coordinator, name, tmp_path / name)
            agents.append(support.start_agent(tmp_path / name))
        assert all(a.wait_connected(10) for a in agents)
        model = mlp_model(tmp_path / "m.onnx", [4, 8, 2])
        with support.operator(coordinator) as op:
            client = RegistryClient(op)
            client.push(model, "m")
            rollout = client.rollout("m", "1", ["kind=hospital"])
            assert {s["state"] for s in rollout["sites"]} == {"pending"}  # accepted, not yet delivered
            peak = 0
            for name in ("hospital-a", "hospital-b", "hospital-c"):
                peak = max(peak, coordinator.registry.rollouts.delivery.in_flight())
                wait_state(client, "m", "1", name, "active")
        assert peak <= 1 and all(a.models.get("m").version == "1" for a in agents)
    finally:
        for agent in agents:
            agent.stop(0)
        coordinator.stop(0)


def test_a_client_generated_from_the_proto_reads_the_hand_encoded_chunks(coordinator, make_agent, tmp_path):
    agent = make_agent("hospital-a")
    coordinator.distribution.chunk_bytes = 64 * 1024
    big = mlp_model(tmp_path / "big.onnx", [256, 512, 2])
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        client.push(big, "big")
        client.rollout("big", "1", ["site=hospital-a"])
        wait_state(client, "big", "1", "hospital-a", "active")
    with mtls_channel(coordinator.address, load_identity(agent.layout).credentials) as channel:
        stub = registry_pb2_grpc.DistributionServiceStub(channel)  # protobuf's own parsing
        chunks = list(stub.DownloadModel(pb.DownloadModelRequest(name="big", version="1", offset=100), timeout=10))
    expected = big.read_bytes()
    assert [c.offset for c in chunks] == list(range(100, len(expected), 64 * 1024))
    assert b"".join(c.data for c in chunks) == expected[100:]


def test_tampered_blob_signature_or_signer_keeps_the_current_version(coordinator, make_agent, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from silolink import manifests, pki

    agent = make_agent("hospital-a")
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        client.push(model_file(tmp_path, "v1"), "risk")
        client.rollout("risk", "1", ["site=hospital-a"])
        wait_state(client, "risk", "1", "hospital-a", "active")

        # A flipped byte in the stored blob: the site's digest check refuses it.
        v2 = client.push(model_file(tmp_path, "v2", 2.0), "risk")
        blob = coordinator.registry.blob_path(v2["sha256"])
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        client.rollout("risk", "2", ["site=hospital-a"])
        failed = wait_state(client, "risk", "2", "hospital-a", "failed")
        assert "does not match the signed manifest" in failed["reason"]
        assert agent.models.get("risk").version == "1" and leftovers(agent) == []

        # A flipped byte in the stored signature: refused before any download.
        v3 = client.push(model_file(tmp_path, "v3", 3.0), "risk")
        record = coordinator.registry.store.get_version("risk", v3["version"])
        bad = bytearray(record.manifest_signature)
        bad[0] ^= 0x01
        with coordinator.registry.store.lock:
            coordinator.db["registry_models"].update(("risk", "3"), {"manifest_signature": bytes(bad)})
        client.rollout("risk", "3", ["site=hospital-a"])
        failed = wait_state(client, "risk", "3", "hospital-a", "failed")
        assert "signature does not verify" in failed["reason"]

        # A manifest signed by another key, with a certificate from another CA.
        real = coordinator.registry.signer
        other_key = Ed25519PrivateKey.generate()
        other_ca = pki.CertificateAuthority.create("someone else", pki.dt.timedelta(days=1))
        forged = manifests.issue_signer_certificate(other_ca, other_key.public_key(), pki.dt.timedelta(days=1))
        coordinator.registry.signer = manifests.Signer(other_key, pki.cert_to_pem(forged))
        client.push(model_file(tmp_path, "v4", 4.0), "risk")
        client.rollout("risk", "4", ["site=hospital-a"])
        failed = wait_state(client, "risk", "4", "hospital-a", "failed")
        assert "not issued by the coordinator CA" in failed["reason"]
        # Another key presented with the real certificate: the signature does not verify.
        coordinator.registry.signer = manifests.Signer(other_key, real.certificate_pem)
        client.push(model_file(tmp_path, "v5", 5.0), "risk")
        client.rollout("risk", "5", ["site=hospital-a"])
        failed = wait_state(client, "risk", "5", "hospital-a", "failed")
        assert "signature does not verify" in failed["reason"]
        coordinator.registry.signer = real
    assert [r.version for r in agent.models.list()] == ["1"] and agent.models.get("risk").version == "1"
    assert leftovers(agent) == []
    assert agent.registry.orders.get(failed["rollout_id"]) is None  # refused orders are never recorded


def test_approval_canary_rollback_and_offline_sites(coordinator, make_agent, tmp_path):
    a = make_agent("hospital-a", registry=RegistryConfig(require_approval=True))
    b = make_agent("hospital-b")
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        client.push(model_file(tmp_path, "v1"), "risk")
        client.push(model_file(tmp_path, "v2", 2.0), "risk")
        rollout = client.rollout("risk", "1", ["kind=hospital"], canary=1)
        assert [(s["site"], s["state"]) for s in rollout["sites"]] == [
            ("hospital-a", "pending"),
            ("hospital-b", "held"),
        ]
        waiting = wait_state(client, "risk", "1", "hospital-a", "awaiting_approval")
        assert "edge-agent models approve risk:1" in waiting["reason"]
        with pytest.raises(errors.NotFound):
            a.models.get("risk")
        with pytest.raises(errors.FailedPrecondition, match="hospital-a \\(awaiting_approval"):
            client.continue_rollout("risk", "1")
        OrderStore.open(a.layout.state_db).approve("risk", "1")  # what `edge-agent models approve` does
        wait_state(client, "risk", "1", "hospital-a", "active")
        assert client.status("risk", "1")[1]["state"] == "held"

        # hospital-b goes offline; continuing the canary queues its order until it returns.
        b.stop(0)
        support.wait_for(lambda: not coordinator.hub.is_connected("hospital-b"), 10, "hospital-b offline")
        client.continue_rollout("risk", "1")
        assert {s["site"]: s["state"] for s in client.status("risk", "1")}["hospital-b"] == "pending"
        b2 = support.start_agent(b.layout.root)
        try:
            wait_state(client, "risk", "1", "hospital-b", "active")
            client.rollout("risk", "2", ["site=hospital-b"])
            wait_state(client, "risk", "2", "hospital-b", "active")
            assert b2.models.get("risk").version == "2"
            back = client.rollback("risk", "1")
            assert back["kind"] == "rollback" and [s["site"] for s in back["sites"]] == ["hospital-a", "hospital-b"]
            wait_state(client, "risk", "1", "hospital-b", "active")
            assert b2.models.get("risk").version == "1"
            assert client.status("risk", "2")[0]["state"] == "superseded"
        finally:
            b2.stop(0)
    assert "model.rollback" in [e.action for e in coordinator.audit.entries()]


def test_push_file_api_for_training_jobs(coordinator, tmp_path):
    record = coordinator.registry.push_file(
        model_file(tmp_path, "trained"), "fed-risk", creator="job:42", source_job="42"
    )
    assert (record.version, record.creator, record.source_job) == ("1", "job:42", "42")
    assert b'"source_job":"42"' in record.manifest
    with pytest.raises(errors.InvalidArgument, match="model name"):
        coordinator.registry.push_file(model_file(tmp_path, "x"), "bad name")


def test_a_client_built_before_site_selectors_still_rolls_out_with_targets(coordinator, make_agent, tmp_path):
    # Issue 15 item 10: f71ff08 deleted Target and StartRolloutRequest.targets inside v1;
    # they are back (deprecated) and the coordinator honours them, as these old clients send.
    make_agent("hospital-a")
    make_agent("factory-a", kind="factory")
    with support.operator(coordinator) as op:
        client = RegistryClient(op)
        client.push(model_file(tmp_path, "old"), "old")
        stub = registry_pb2_grpc.RegistryServiceStub(op.channel)
        request = pb.StartRolloutRequest(
            name="old", version="1", targets=[pb.Target(kind=site_pb2.SITE_KIND_HOSPITAL), pb.Target(site="factory-a")]
        )
        rollout = op.call(stub.StartRollout, request).rollout
        assert sorted(s.site for s in rollout.sites) == ["factory-a", "hospital-a"]
        with pytest.raises(errors.InvalidArgument, match="names no kind, tag or site"):
            op.call(stub.StartRollout, pb.StartRolloutRequest(name="old", version="1", targets=[pb.Target()]))


def test_rollout_status_by_page_and_state_and_the_rollouts_in_progress(coordinator, tmp_path):
    """The console's model page and overview at any number of sites: the coordinator pages,
    filters and counts a version's sites (each one's latest order), and lists the versions
    still on their way."""
    with support.operator(coordinator) as op:
        for i in range(120):
            op.add_site(f"h-{i:03}", "hospital", {})  # added, never enrolled: their orders wait
        client = RegistryClient(op)
        client.push(model_file(tmp_path, "v1"), "risk")
        client.push(model_file(tmp_path, "v2", 2.0), "risk")
        assert client.active_rollouts() == []
        client.rollout("risk", "1", ["kind=hospital"], canary=5)
        every = client.status("risk", "1")
        assert len(every) == 120 and [s["site"] for s in every] == sorted(s["site"] for s in every)
        first = client.status_page("risk", "1", 50)
        assert first["sites"] == every[:50] and first["total"] == 120
        assert first["state_counts"] == {"pending": 5, "held": 115}
        assert client.status_page("risk", "1", 50, 100)["sites"] == every[100:]
        pending = client.status_page("risk", "1", 50, state="pending")
        assert [s["site"] for s in pending["sites"]] == [f"h-{i:03}" for i in range(5)] and pending["total"] == 5
        assert pending["state_counts"] == first["state_counts"]  # counts ignore the filter
        # A newer rollout of another version to some sites: v1's page shows each site's latest order.
        client.rollout("risk", "2", ["site=h-000", "site=h-119"])
        after = {s["site"]: s["state"] for s in client.status("risk", "1")}
        assert after["h-000"] == "superseded" and after["h-119"] == "superseded" and after["h-001"] == "pending"
        assert client.status_page("risk", "1", 1, state="superseded")["total"] == 2
        active = client.active_rollouts()
        assert [(r["model"], r["sites"]) for r in active] == [("risk:2", 2), ("risk:1", 120)]  # newest first
        assert active[0]["state_counts"] == {"pending": 2}
        assert active[1]["state_counts"] == {"pending": 4, "held": 114}
        assert [r["model"] for r in client.active_rollouts(1)] == ["risk:2"]
        stub = registry_pb2_grpc.RegistryServiceStub(op.channel)
        with pytest.raises(errors.InvalidArgument, match="page token is not one this server gave out"):
            op.call(stub.GetRolloutStatus, pb.GetRolloutStatusRequest(name="risk", version="1", page_token="x"))
        with pytest.raises(errors.InvalidArgument, match="rollout state 99 is not a known state"):
            op.call(stub.GetRolloutStatus, pb.GetRolloutStatusRequest(name="risk", version="1", state=99))
        with pytest.raises(errors.NotFound):
            client.status_page("risk", "9", 10)
