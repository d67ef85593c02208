"""Site lifecycle logic without sockets: tokens, enrollment, renewal, revocation."""

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_coordinator.audit.store import AuditLog
from cloud_coordinator.sites.service import SiteService
from cloud_coordinator.sites.store import SiteStore
from silolink import errors, pki
from silolink.db import open_database
from silolink.identity import Identity, Role


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(clock):
    ca = pki.CertificateAuthority.create("test", dt.timedelta(days=1))
    db = open_database(None)
    audit = AuditLog(db, Ed25519PrivateKey.generate(), clock)
    return SiteService(SiteStore(db), ca, audit, token_ttl_s=3600, site_cert_lifetime_s=600, clock=clock)


def csr():
    return pki.make_csr(pki.generate_key(), "x")


def identity_for(cert_pem: bytes) -> Identity:
    return pki.identity_of(pki.load_cert(cert_pem))


def test_enrollment_issues_a_certificate_the_identity_check_accepts(service):
    issued = service.add_site("hospital-a", "hospital", {"region": "north"})
    result = service.enroll(issued.token, csr(), "0.1.0")
    identity = identity_for(result.certificate_pem)
    assert identity == Identity(Role.AGENT, "hospital-a", identity.serial)
    service.check_identity(identity)
    assert service.get_site("hospital-a").enrolled_at is not None


def test_token_is_single_use(service):
    issued = service.add_site("hospital-a", "hospital", {})
    service.enroll(issued.token, csr(), "0.1.0")
    with pytest.raises(errors.Unauthenticated, match="already used"):
        service.enroll(issued.token, csr(), "0.1.0")


def test_expired_and_unknown_tokens_are_refused(service, clock):
    issued = service.add_site("hospital-a", "hospital", {}, token_ttl_s=60)
    clock.now += 61
    with pytest.raises(errors.Unauthenticated, match="expired"):
        service.enroll(issued.token, csr(), "0.1.0")
    with pytest.raises(errors.Unauthenticated, match="not recognised"):
        service.enroll("slt_" + "x" * 43, csr(), "0.1.0")
    with pytest.raises(errors.Unauthenticated, match="malformed"):
        service.enroll("hello", csr(), "0.1.0")


def test_bad_csr_leaves_the_token_usable(service):
    issued = service.add_site("hospital-a", "hospital", {})
    with pytest.raises(errors.InvalidArgument):
        service.enroll(issued.token, b"garbage", "0.1.0")
    assert service.get_site("hospital-a").enrolled_at is None
    service.enroll(issued.token, csr(), "0.1.0")  # nothing half-done: the token still works


def test_re_adding_a_pending_site_voids_its_old_token(service):
    first = service.add_site("hospital-a", "hospital", {})
    second = service.add_site("hospital-a", "hospital", {})
    with pytest.raises(errors.Unauthenticated):
        service.enroll(first.token, csr(), "0.1.0")
    service.enroll(second.token, csr(), "0.1.0")
    with pytest.raises(errors.AlreadyExists):
        service.add_site("hospital-a", "hospital", {})


def test_invalid_requests(service):
    with pytest.raises(errors.InvalidArgument):
        service.add_site("Bad Name", "hospital", {})
    with pytest.raises(errors.InvalidArgument, match="kind"):
        service.add_site("lab-a", "laboratory", {})
    with pytest.raises(errors.NotFound):
        service.revoke("nobody")


def test_revocation_refuses_every_certificate_of_the_site_and_tells_listeners(service):
    revoked = []
    service.on_revoke(revoked.append)
    issued = service.add_site("hospital-a", "hospital", {})
    identity = identity_for(service.enroll(issued.token, csr(), "0.1.0").certificate_pem)
    renewed = identity_for(service.renew(identity, csr()))
    service.revoke("hospital-a")
    assert revoked == ["hospital-a"]
    for ident in (identity, renewed):
        with pytest.raises(errors.PermissionDenied, match="revoked"):
            service.check_identity(ident)
    with pytest.raises(errors.PermissionDenied):
        service.renew(renewed, csr())


def test_unknown_serial_is_refused_even_from_our_ca(service):
    with pytest.raises(errors.PermissionDenied, match="not"):
        service.check_identity(Identity(Role.OPERATOR, "admin", "deadbeef"))


def test_every_site_action_is_audited_with_its_actor(service):
    issued = service.add_site("hospital-a", "hospital", {}, actor="operator:admin")
    service.enroll(issued.token, csr(), "0.1.0")
    service.revoke("hospital-a", actor="operator:admin")
    entries = service._audit.entries()
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("operator:admin", "site.add", "hospital-a"),
        ("site:hospital-a", "site.enroll", "hospital-a"),
        ("operator:admin", "site.revoke", "hospital-a"),
    ]
    assert issued.token not in repr(entries)
    service._audit.verify()
