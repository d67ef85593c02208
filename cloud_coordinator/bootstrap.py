"""``cloud-coordinator init``: a CA, a server certificate, an operator credential, a config.

The CA key signs certificates only; it never leaves the data directory. The operator
credential is written as one JSON file so it can be copied to an operator's machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silolink import config as config_mod
from silolink import errors, pki
from silolink.config import CoordinatorConfig
from silolink.db import open_database
from silolink.files import private_dir, write_atomic
from silolink.identity import Role

from .accounts.store import AccountStore
from .layout import CoordinatorLayout
from .registry.signing import ensure_signer
from .sites.store import CertificateRecord, SiteStore

log = logging.getLogger(__name__)
CA_LIFETIME = dt.timedelta(days=3650)
OPERATOR_NAME = "admin"


@dataclass(frozen=True)
class InitResult:
    ca_fingerprint: str
    credentials_file: Path
    config_file: Path


def init(root: Path, hostnames: list[str], public_address: str | None = None) -> InitResult:
    """Create a new coordinator data directory at ``root`` (which must not hold one)."""
    layout = CoordinatorLayout(Path(root).resolve())
    if layout.config.exists() or layout.ca_key.exists():
        raise errors.AlreadyExists(f"{layout.root} already holds a coordinator; refusing to overwrite it")
    names = list(dict.fromkeys([*hostnames, "localhost", "127.0.0.1"]))
    cfg = dataclasses.replace(CoordinatorConfig(), hostnames=tuple(names), public_address=public_address or "")
    private_dir(layout.root)
    private_dir(layout.pki)
    private_dir(layout.operator)
    private_dir(layout.state)

    ca = pki.CertificateAuthority.create("silolink coordinator CA", CA_LIFETIME)
    write_atomic(layout.ca_key, pki.key_to_pem(ca.key))
    write_atomic(layout.ca_cert, pki.cert_to_pem(ca.cert), mode=0o644)
    issue_server_certificate(layout, cfg, ca)
    load_audit_key(layout)
    ensure_signer(layout, ca)

    operator_key = pki.generate_key()
    operator_cert = ca.issue_client(
        operator_key.public_key(), Role.OPERATOR, OPERATOR_NAME, dt.timedelta(seconds=cfg.operator_cert_lifetime_s)
    )
    store = SiteStore(open_database(layout.database))
    store.add_certificate(
        CertificateRecord(
            serial=pki.serial_hex(operator_cert),
            role=Role.OPERATOR.value,
            name=OPERATOR_NAME,
            issued_at=pki.utcnow().timestamp(),
            expires_at=operator_cert.not_valid_after_utc.timestamp(),
        )
    )
    # The accounts table's first migration makes each operator certificate's holder an
    # admin account: here that is the first admin, as for data dirs from before accounts.
    AccountStore(store.db)
    store.db.close()
    credentials = {
        "coordinator": cfg.public_address or f"{names[0]}:{cfg.listen.rsplit(':', 1)[1]}",
        "operator": OPERATOR_NAME,
        "ca_pem": pki.cert_to_pem(ca.cert).decode(),
        "cert_pem": pki.cert_to_pem(operator_cert).decode(),
        "key_pem": pki.key_to_pem(operator_key).decode(),
    }
    write_atomic(layout.operator_credentials, json.dumps(credentials, indent=2).encode())
    write_atomic(layout.config, config_mod.dump(cfg).encode(), mode=0o644)
    log.info("coordinator initialised in %s", layout.root)
    return InitResult(ca.fingerprint, layout.operator_credentials, layout.config)


def load_audit_key(layout: CoordinatorLayout) -> Ed25519PrivateKey:
    """The audit signing key, created on first use (data dirs from before the audit log)."""
    if not layout.audit_key.exists():
        key = Ed25519PrivateKey.generate()
        write_atomic(
            layout.audit_key,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        return key
    key = serialization.load_pem_private_key(layout.audit_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.FailedPrecondition(f"{layout.audit_key} is not an Ed25519 key")
    return key


def load_ca(layout: CoordinatorLayout) -> pki.CertificateAuthority:
    if not layout.ca_key.exists():
        raise errors.FailedPrecondition(
            f"{layout.root} holds no coordinator; run `cloud-coordinator init --data-dir {layout.root}` first"
        )
    return pki.CertificateAuthority(
        pki.load_key(layout.ca_key.read_bytes()), pki.load_cert(layout.ca_cert.read_bytes())
    )


def issue_server_certificate(layout: CoordinatorLayout, cfg: CoordinatorConfig, ca: pki.CertificateAuthority) -> None:
    key, cert = ca.issue_server(list(cfg.hostnames), dt.timedelta(seconds=cfg.server_cert_lifetime_s))
    write_atomic(layout.server_key, pki.key_to_pem(key))
    # The chain includes the CA so enrolling agents can find it and pin its fingerprint.
    write_atomic(layout.server_cert, pki.cert_to_pem(cert) + pki.cert_to_pem(ca.cert), mode=0o644)


def ensure_server_certificate(layout: CoordinatorLayout, cfg: CoordinatorConfig, ca: pki.CertificateAuthority) -> None:
    """Reissue the server certificate if it is missing, expiring, or misses a hostname."""
    reason = ""
    if not layout.server_cert.exists():
        reason = "missing"
    else:
        cert = x509.load_pem_x509_certificates(layout.server_cert.read_bytes())[0]
        remaining = cert.not_valid_after_utc - pki.utcnow()
        covered = set(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
        covered |= {
            str(ip)
            for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.IPAddress
            )
        }
        if remaining < dt.timedelta(seconds=cfg.server_cert_lifetime_s / 3):
            reason = "expiring"
        elif not set(cfg.hostnames) <= covered:
            reason = "hostnames changed"
    if reason:
        log.info("issuing a new server certificate (%s)", reason)
        issue_server_certificate(layout, cfg, ca)
