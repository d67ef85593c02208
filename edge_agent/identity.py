"""The site's identity on disk: its key and certificate, the CA it trusts, renewal."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from silolink import errors, pki
from silolink.files import write_atomic
from silolink.rpc.channels import Credentials, mtls_channel

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


class CoordinatorChannel:
    """One mTLS channel to the coordinator under the site's current certificate: when the
    certificate is renewed, the next call gets a new channel with it."""

    def __init__(self, address: str, identity_loader: Callable[[], SiteIdentity], max_message_bytes: int) -> None:
        self.address = address
        self._load_identity = identity_loader
        self._max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._serial = ""
        self._channel: grpc.Channel | None = None

    def get(self) -> grpc.Channel:
        identity = self._load_identity()
        serial = format(identity.cert.serial_number, "x")
        with self._lock:
            if self._channel is None or serial != self._serial:
                if self._channel is not None:
                    self._channel.close()
                self._channel = mtls_channel(self.address, identity.credentials, self._max_message_bytes)
                self._serial = serial
            return self._channel

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
