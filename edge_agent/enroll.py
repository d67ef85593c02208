"""``edge-agent enroll``: make the site's key here, pin the coordinator's CA, get a certificate.

1. Fetch the certificates the enrollment listener presents, unverified, and keep only the
   one whose SHA-256 matches the fingerprint the operator gave (anything else: refuse).
2. Make a P-256 key locally; it never leaves the site. Send a CSR with the token over TLS
   verified against the pinned CA.
3. Check the returned certificate (signed by that CA, for our key, naming a site), store it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from silolink import __version__, errors, pki
from silolink import config as config_mod
from silolink.config import AgentConfig, default_enroll_address
from silolink.files import private_dir, write_atomic
from silolink.gen.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from silolink.identity import Role
from silolink.rpc.channels import call_enrollment_listener, pin_ca, split_address

from .identity import save_identity
from .layout import AgentLayout


@dataclass(frozen=True)
class EnrollResult:
    site: str
    kind: str
    certificate_expires_at: str
    data_dir: Path


def enroll(
    data_dir: Path,
    coordinator: str,
    token: str,
    ca_fingerprint: str,
    enroll_address: str | None = None,
    timeout_s: float = 15.0,
) -> EnrollResult:
    layout = AgentLayout(Path(data_dir).resolve())
    if layout.identity.exists():
        raise errors.AlreadyExists(f"{layout.root} is already enrolled; use an empty data directory to enroll again")
    split_address(coordinator)
    enroll_address = enroll_address or default_enroll_address(coordinator)
    ca_pem = pin_ca(enroll_address, ca_fingerprint)
    ca = pki.load_cert(ca_pem)

    key = pki.generate_key()
    request = enrollment_pb2.EnrollRequest(
        token=token.strip(), csr_pem=pki.make_csr(key, "silolink-agent"), agent_version=__version__
    )
    reply = call_enrollment_listener(
        enroll_address,
        ca_pem,
        lambda channel: enrollment_pb2_grpc.EnrollmentServiceStub(channel).Enroll(request, timeout=timeout_s),
    )

    cert = pki.load_cert(reply.certificate_pem)
    identity = pki.identity_of(cert)
    if not pki.issued_by(cert, ca) or identity is None or identity.role is not Role.AGENT:
        raise errors.Internal("the coordinator returned a certificate that does not check out; nothing was saved")
    private_dir(layout.root)
    private_dir(layout.pki)
    write_atomic(layout.ca_cert, ca_pem, mode=0o644)
    save_identity(layout, key, reply.certificate_pem)
    # Keep any settings the site admin wrote before enrolling; record who we are and where to dial.
    cfg = config_mod.load(AgentConfig, layout.config, "SILOLINK_AGENT", environ={})
    cfg = dataclasses.replace(cfg, site=identity.name, coordinator=coordinator)
    write_atomic(layout.config, config_mod.dump(cfg).encode(), mode=0o644)
    kind = {1: "hospital", 2: "factory"}.get(reply.kind, "unknown")
    return EnrollResult(identity.name, kind, cert.not_valid_after_utc.isoformat(timespec="seconds"), layout.root)
