"""Signed model manifests: what the coordinator signs and what each site checks.

A manifest is canonical JSON (sorted keys, no spaces) naming a model version and its
file's SHA-256 and size. The coordinator signs its exact bytes with an Ed25519
model-signing key kept apart from the CA key. Sites already pin the coordinator's CA at
enrollment; the CA issues a certificate for the signing key (URI SAN
``silolink://model-signer``, code-signing usage), so a site checks that certificate
against its pinned CA, then the signature, then the digest of the bytes it downloaded.
No new trust anchor has to be handed to the site.

Flower app bundles are signed the same way, with a manifest of their own type
(``silolink.app-manifest.v1``: ``encode_app`` / ``verify_app``), by the same key: a site
that trusts the coordinator's models trusts the code it offers on the same terms, and still
decides itself whether to run it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from silolink import errors, pki
from silolink.onnx_models import check_name

MANIFEST_TYPE = "silolink.model-manifest.v1"
APP_MANIFEST_TYPE = "silolink.app-manifest.v1"
SIGNER_URI = "silolink://model-signer"
MANIFEST_FIELDS = (
    "name",
    "version",
    "sha256",
    "size",
    "inputs",
    "outputs",
    "description",
    "creator",
    "source_job",
    "created_at",
)
APP_MANIFEST_FIELDS = (
    "name",
    "version",
    "sha256",
    "size",
    "publisher",
    "files",  # [{"path", "sha256", "size"}], as the bundle's .info/CONTENT lists them
    "dependencies",  # [project] dependencies, PEP 508 strings
    "config",  # [tool.flwr.app.config] defaults, flattened: {"key": bool | int | float | str}
    "serverapp",
    "clientapp",
    "description",
    "creator",
    "created_at",
    "builtin",
)


def encode(fields: dict[str, Any]) -> bytes:
    """The canonical bytes of a model manifest holding exactly ``MANIFEST_FIELDS``."""
    return _canonical(MANIFEST_TYPE, MANIFEST_FIELDS, fields)


def encode_app(fields: dict[str, Any]) -> bytes:
    """The canonical bytes of an app manifest holding exactly ``APP_MANIFEST_FIELDS``."""
    return _canonical(APP_MANIFEST_TYPE, APP_MANIFEST_FIELDS, fields)


def _canonical(kind: str, names: tuple[str, ...], fields: dict[str, Any]) -> bytes:
    missing = set(names) - set(fields)
    if missing:
        raise ValueError(f"manifest lacks {sorted(missing)}")
    body = {"type": kind, **{k: fields[k] for k in names}}
    # allow_nan=False: NaN has no canonical JSON form; an app declaring one is refused earlier.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def issue_signer_certificate(
    ca: pki.CertificateAuthority, public_key: Ed25519PublicKey, lifetime: dt.timedelta
) -> x509.Certificate:
    """A certificate binding the model-signing key to the coordinator's CA."""
    now = pki.utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "silolink model signer")]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(pki.CLOCK_SKEW, lifetime / 20))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SIGNER_URI)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Signer:
    """The coordinator's model-signing key and its certificate."""

    key: Ed25519PrivateKey
    certificate_pem: bytes

    def sign(self, manifest: bytes) -> bytes:
        return self.key.sign(manifest)


def check_signer_certificate(cert_pem: bytes, ca_pem: bytes, now: dt.datetime | None = None) -> Ed25519PublicKey:
    """The signing key in ``cert_pem`` if the pinned CA issued it for model signing."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise errors.PermissionDenied("the model-signing certificate is not a valid PEM certificate") from None
    ca = pki.load_cert(ca_pem)
    if not pki.issued_by(cert, ca):
        raise errors.PermissionDenied(
            "the model-signing certificate was not issued by the coordinator CA this site enrolled with; "
            "refusing the model"
        )
    now = now or pki.utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise errors.PermissionDenied(
            f"the model-signing certificate is not valid now (valid {cert.not_valid_before_utc.isoformat()} "
            f"to {cert.not_valid_after_utc.isoformat()}); check the clocks or restart the coordinator to renew it"
        )
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        uris, usages = [], []  # type: ignore[assignment]
    if SIGNER_URI not in uris or ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise errors.PermissionDenied(
            "the certificate presented for the model signer is not a model-signing certificate"
        )
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise errors.PermissionDenied("the model-signing certificate does not hold an Ed25519 key")
    return key


def verify(manifest: bytes, signature: bytes, cert_pem: bytes, ca_pem: bytes) -> dict[str, Any]:
    """A model manifest's fields, after checking the signer's certificate and the signature."""
    fields = _verified(manifest, signature, cert_pem, ca_pem, "model", MANIFEST_TYPE, MANIFEST_FIELDS)
    check_name("model name", fields["name"])
    check_name("version", fields["version"])
    return fields


def verify_app(manifest: bytes, signature: bytes, cert_pem: bytes, ca_pem: bytes) -> dict[str, Any]:
    """An app manifest's fields, after checking the signer's certificate and the signature."""
    fields = _verified(manifest, signature, cert_pem, ca_pem, "app", APP_MANIFEST_TYPE, APP_MANIFEST_FIELDS)
    for key in ("name", "version", "publisher", "serverapp", "clientapp"):
        if not isinstance(fields[key], str) or not fields[key]:
            raise errors.InvalidArgument(f"the signed app manifest has a malformed {key}")
    if not isinstance(fields["files"], list) or not isinstance(fields["dependencies"], list):
        raise errors.InvalidArgument("the signed app manifest has malformed files or dependencies")
    if not isinstance(fields["config"], dict):
        raise errors.InvalidArgument("the signed app manifest has a malformed config")
    return fields


def _verified(
    manifest: bytes, signature: bytes, cert_pem: bytes, ca_pem: bytes, what: str, kind: str, names: tuple[str, ...]
) -> dict[str, Any]:
    key = check_signer_certificate(cert_pem, ca_pem)
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise errors.PermissionDenied(
            f"the {what} manifest's signature does not verify against the coordinator's model-signing key; "
            f"the manifest or its signature was altered, refusing the {what}"
        ) from None
    try:
        fields = json.loads(manifest)
    except ValueError:
        raise errors.InvalidArgument(f"the signed {what} manifest is not JSON") from None
    if not isinstance(fields, dict) or fields.get("type") != kind:
        raise errors.InvalidArgument(f"the signed document is not a {kind}")
    missing = [k for k in names if k not in fields]
    if missing:
        raise errors.InvalidArgument(f"the signed {what} manifest lacks {', '.join(missing)}")
    sha = fields["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise errors.InvalidArgument(f"the signed {what} manifest has a malformed sha256")
    if not isinstance(fields["size"], int) or fields["size"] <= 0:
        raise errors.InvalidArgument(f"the signed {what} manifest has a malformed size")
    return fields
