"""The coordinator's model-signing key and its CA-issued certificate, on disk.

The key lives beside the CA key (``pki/model-signing.key``) but is a different key: it
signs model manifests only, and the CA only vouches for it with a certificate
(``pki/model-signing.pem``), so sites need no new trust anchor. ``init`` creates both;
``serve`` creates them for data directories from before the registry and reissues the
certificate when it nears expiry.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silolink import errors, manifests, pki
from silolink.files import write_atomic

from ..layout import CoordinatorLayout

log = logging.getLogger(__name__)
SIGNER_LIFETIME = dt.timedelta(days=730)


def key_path(layout: CoordinatorLayout):
    return layout.pki / "model-signing.key"


def cert_path(layout: CoordinatorLayout):
    return layout.pki / "model-signing.pem"


def ensure_signer(layout: CoordinatorLayout, ca: pki.CertificateAuthority) -> manifests.Signer:
    """Load the signing key (creating it once) and a current certificate for it."""
    path = key_path(layout)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise errors.FailedPrecondition(f"{path} is not an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        write_atomic(
            path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        log.info("created the model-signing key")
    cert_file = cert_path(layout)
    reason = _reissue_reason(cert_file, key, ca)
    if reason:
        cert = manifests.issue_signer_certificate(ca, key.public_key(), SIGNER_LIFETIME)
        write_atomic(cert_file, pki.cert_to_pem(cert), mode=0o644)
        log.info("issued a model-signing certificate (%s)", reason)
    return manifests.Signer(key, cert_file.read_bytes())


def _reissue_reason(cert_file, key: Ed25519PrivateKey, ca: pki.CertificateAuthority) -> str:
    if not cert_file.exists():
        return "missing"
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if cert.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        return "key changed"
    if not pki.issued_by(cert, ca.cert):
        return "CA changed"
    if cert.not_valid_after_utc - pki.utcnow() < SIGNER_LIFETIME / 3:
        return "expiring"
    return ""
