"""The site's identity on disk: its key and certificate, the CA it trusts, renewal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from silolink import errors, pki
from silolink.files import write_atomic
from silolink.rpc.channels import Credentials

from .layout import AgentLayout


@dataclass(frozen=True)
class SiteIdentity:
    """The site's credentials as loaded from the data directory."""

    site: str
    key: pki.PrivateKey
    cert: x509.Certificate
    ca_pem: bytes

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.ca_pem, pki.cert_to_pem(self.cert), pki.key_to_pem(self.key))

    @property
    def expires_at(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    def remaining_fraction(self, now: dt.datetime | None = None) -> float:
        """How much of the certificate's lifetime is left, 0 to 1."""
        now = now or pki.utcnow()
        lifetime = (self.cert.not_valid_after_utc - self.cert.not_valid_before_utc).total_seconds()
        remaining = (self.cert.not_valid_after_utc - now).total_seconds()
        return max(0.0, remaining / lifetime) if lifetime > 0 else 0.0


def load_identity(layout: AgentLayout) -> SiteIdentity:
    if not layout.identity.exists():
        raise errors.FailedPrecondition(
            f"{layout.root} holds no enrolled site; run `edge-agent enroll ... --data-dir {layout.root}` first"
        )
    blob = layout.identity.read_bytes()
    key = pki.load_key(blob)
    cert = x509.load_pem_x509_certificates(blob)[0]
    identity = pki.identity_of(cert)
    if identity is None:
        raise errors.FailedPrecondition(f"{layout.identity} holds no site certificate")
    return SiteIdentity(identity.name, key, cert, layout.ca_cert.read_bytes())


def save_identity(layout: AgentLayout, key: pki.PrivateKey, cert_pem: bytes) -> None:
    """Store a key and its certificate together, atomically (renewal never half-applies)."""
    cert = pki.load_cert(cert_pem)
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        raise errors.Internal("the coordinator returned a certificate for a different key")
    write_atomic(layout.identity, pki.key_to_pem(key) + cert_pem)
