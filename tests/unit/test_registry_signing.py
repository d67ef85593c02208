"""Manifests, the model-signing key and certificate, and the site's checks; no sockets."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_coordinator import bootstrap
from cloud_coordinator.layout import CoordinatorLayout
from cloud_coordinator.registry.signing import cert_path, ensure_signer, key_path
from edge_agent.registry.orders import OrderStore
from edge_agent.registry.sink import PartialFile
from silolink import errors, manifests, pki
from silolink.identity import Role

FIELDS = {
    "name": "risk",
    "version": "3",
    "sha256": "ab" * 32,
    "size": 1234,
    "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
    "outputs": [],
    "description": "d",
    "creator": "operator:admin",
    "source_job": "",
    "created_at": "2026-11-25T00:00:00+00:00",
}


@pytest.fixture
def ca():
    return pki.CertificateAuthority.create("test CA", dt.timedelta(days=30))


def signer_for(ca, key=None, lifetime=dt.timedelta(days=1)):
    key = key or Ed25519PrivateKey.generate()
    cert = manifests.issue_signer_certificate(ca, key.public_key(), lifetime)
    return manifests.Signer(key, pki.cert_to_pem(cert))


def test_manifest_is_canonical_and_verifies(ca):
    manifest = manifests.encode(FIELDS)
    assert manifest == manifests.encode(dict(reversed(list(FIELDS.items()))))
    assert b" " not in manifest and json.loads(manifest)["type"] == manifests.MANIFEST_TYPE
    signer = signer_for(ca)
    fields = manifests.verify(manifest, signer.sign(manifest), signer.certificate_pem, pki.cert_to_pem(ca.cert))
    assert fields["sha256"] == "ab" * 32 and fields["size"] == 1234


def test_every_tampering_is_refused(ca):
    ca_pem = pki.cert_to_pem(ca.cert)
    signer = signer_for(ca)
    manifest = manifests.encode(FIELDS)
    signature = signer.sign(manifest)
    altered = manifest.replace(b'"size":1234', b'"size":1235')
    with pytest.raises(errors.PermissionDenied, match="signature does not verify"):
        manifests.verify(altered, signature, signer.certificate_pem, ca_pem)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(errors.PermissionDenied, match="signature does not verify"):
        manifests.verify(manifest, flipped, signer.certificate_pem, ca_pem)
    other_ca = pki.CertificateAuthority.create("other CA", dt.timedelta(days=30))
    foreign = signer_for(other_ca)
    with pytest.raises(errors.PermissionDenied, match="not issued by the coordinator CA"):
        manifests.verify(manifest, foreign.sign(manifest), foreign.certificate_pem, ca_pem)
    # A site's own client certificate (same CA) is not a model-signing certificate.
    site_cert = ca.issue_client(pki.generate_key().public_key(), Role.AGENT, "hospital-a", dt.timedelta(days=1))
    with pytest.raises(errors.PermissionDenied, match="not a model-signing certificate"):
        manifests.verify(manifest, signature, pki.cert_to_pem(site_cert), ca_pem)
    expired = signer_for(ca, signer.key, lifetime=dt.timedelta(seconds=1))
    with pytest.raises(errors.PermissionDenied, match="not valid now"):
        manifests.check_signer_certificate(expired.certificate_pem, ca_pem, now=pki.utcnow() + dt.timedelta(minutes=10))


def test_init_creates_the_signing_key_apart_from_the_ca_and_serve_keeps_it(tmp_path):
    bootstrap.init(tmp_path / "c", ["localhost"])
    layout = CoordinatorLayout(tmp_path / "c")
    assert key_path(layout).exists() and cert_path(layout).exists()
    assert key_path(layout).read_bytes() != layout.ca_key.read_bytes()
    assert key_path(layout).stat().st_mode & 0o077 == 0
    ca = bootstrap.load_ca(layout)
    first = ensure_signer(layout, ca)
    again = ensure_signer(layout, ca)
    assert first.certificate_pem == again.certificate_pem
    manifests.check_signer_certificate(first.certificate_pem, pki.cert_to_pem(ca.cert))
    cert_path(layout).unlink()  # a data dir from before the registry: made on serve
    renewed = ensure_signer(layout, ca)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert renewed.key.public_key().public_bytes(*raw) == first.key.public_key().public_bytes(*raw)
    assert renewed.certificate_pem != first.certificate_pem
    manifests.check_signer_certificate(cert_path(layout).read_bytes(), pki.cert_to_pem(ca.cert))


def test_approval_needs_an_order_waiting_for_it(tmp_path):
    store = OrderStore.open(tmp_path / "agent.db")
    with pytest.raises(errors.NotFound, match="no model awaits approval"):
        store.approve("risk", "1")
    store.add("r1", "risk", "1", "ab" * 32, 10)
    store.update("r1", state="awaiting_approval")
    assert store.approve("risk", "1").approved_at is not None
    with pytest.raises(errors.NotFound, match="awaiting approval: risk:1"):
        store.approve("risk", "2")


def test_partial_file_resumes_with_the_same_digest(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    first = PartialFile(tmp_path / "m.part")
    first.put(data[:300_000])
    first.close()
    second = PartialFile(tmp_path / "m.part")
    assert second.offset == 300_000
    second.put(data[300_000:])
    assert second.close() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "m.part").read_bytes() == data


APP_FIELDS = {
    "name": "numpy-app",
    "version": "1.0.0",
    "sha256": "cd" * 32,
    "size": 4321,
    "publisher": "acme",
    "files": [{"path": "numpy_app/server_app.py", "sha256": "ef" * 32, "size": 10}],
    "dependencies": ["numpy>=2"],
    "config": {"num-server-rounds": 3, "fraction-train": 0.5, "verbose": False, "name": "x"},
    "serverapp": "numpy_app.server_app:app",
    "clientapp": "numpy_app.client_app:app",
    "description": "",
    "creator": "operator:admin",
    "created_at": "2026-11-25T00:00:00+00:00",
    "builtin": False,
}


def test_app_manifests_are_signed_like_models_and_never_pass_for_one(ca):
    signer = signer_for(ca)
    ca_pem = pki.cert_to_pem(ca.cert)
    manifest = manifests.encode_app(APP_FIELDS)
    assert json.loads(manifest)["type"] == manifests.APP_MANIFEST_TYPE
    fields = manifests.verify_app(manifest, signer.sign(manifest), signer.certificate_pem, ca_pem)
    assert fields["config"] == APP_FIELDS["config"] and isinstance(fields["config"]["num-server-rounds"], int)
    tampered = manifest.replace(b"numpy>=2", b"numpy>=1")
    with pytest.raises(errors.PermissionDenied, match="app manifest's signature does not verify"):
        manifests.verify_app(tampered, signer.sign(manifest), signer.certificate_pem, ca_pem)
    # A signed model manifest is not an app manifest, and the other way round.
    model = manifests.encode(FIELDS)
    with pytest.raises(errors.InvalidArgument, match="not a silolink.app-manifest.v1"):
        manifests.verify_app(model, signer.sign(model), signer.certificate_pem, ca_pem)
    with pytest.raises(errors.InvalidArgument, match="not a silolink.model-manifest.v1"):
        manifests.verify(manifest, signer.sign(manifest), signer.certificate_pem, ca_pem)
    with pytest.raises(ValueError):
        manifests.encode_app({**APP_FIELDS, "config": {"lr": float("nan")}})
