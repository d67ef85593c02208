"""Site lifecycle: add, enroll with a one-time token, renew, revoke; and the per-call
identity check that makes revocation take effect at once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from silolink import errors, pki
from silolink.identity import Identity, Role, validate_site_name

from ..audit.store import AuditLog
from .presence import Presence
from .store import CertificateRecord, SiteRecord, SiteStore, TokenRecord

log = logging.getLogger(__name__)

SITE_KINDS = ("hospital", "factory")
TOKEN_PREFIX = "slt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    site: SiteRecord
    token: str
    expires_at: float
    ca_fingerprint: str


@dataclass(frozen=True)
class Enrollment:
    site: SiteRecord
    certificate_pem: bytes
    ca_certificate_pem: bytes


class SiteService:
    """Everything the coordinator does with sites, independent of transport."""

    def __init__(
        self,
        store: SiteStore,
        ca: pki.CertificateAuthority,
        audit: AuditLog,
        *,
        token_ttl_s: int,
        site_cert_lifetime_s: int,
        clock: Callable[[], float] = time.time,
        presence_flush_s: float = 1.0,
    ) -> None:
        self._store = store
        self._ca = ca
        self._audit = audit
        self._token_ttl_s = token_ttl_s
        self._cert_lifetime = dt.timedelta(seconds=site_cert_lifetime_s)
        self._clock = clock
        self._revocation_listeners: list[Callable[[str], None]] = []
        # Heartbeats live in memory and reach the database in batches (see presence.py).
        self.presence = Presence(store, presence_flush_s, clock)
        # The per-call check and ``list_sites`` read memory, not the database: the sites
        # table and certificates change only through this service, which updates both.
        self._lock = threading.Lock()
        self._valid_serials: set[str] = set()
        self._revoked_sites: set[str] = set()
        self._records: dict[str, SiteRecord] = {}
        self._reload()

    def _reload(self) -> None:
        certificates = self._store.certificates()
        sites = self._store.list_sites()
        with self._lock:
            self._valid_serials = {c.serial for c in certificates if c.revoked_at is None}
            self._revoked_sites = {s.name for s in sites if s.revoked_at is not None}
            self._records = {s.name: s for s in sites}

    def _refresh(self, name: str, *new_serials: str) -> None:
        """Re-read one site after a write (and accept its newly issued certificates)."""
        site = self._store.get_site(name)
        with self._lock:
            self._valid_serials.update(new_serials)
            if site is not None:
                self._records[name] = site
                if site.revoked_at is not None:
                    self._revoked_sites.add(name)

    # -- identity ------------------------------------------------------------------------
    def check_identity(self, identity: Identity) -> None:
        """Raise unless ``identity``'s certificate is one we issued and have not revoked."""
        with self._lock:
            if identity.role is Role.AGENT and identity.name in self._revoked_sites:
                raise errors.PermissionDenied(f"site {identity.name} has been revoked by an operator")
            if identity.serial not in self._valid_serials:
                raise errors.PermissionDenied(
                    f"the certificate presented for {identity} is not (or no longer) valid here"
                )

    def on_revoke(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(site)`` after a site is revoked (to close its streams)."""
        self._revocation_listeners.append(listener)

    def record_operator_certificate(self, cert: x509.Certificate, name: str) -> None:
        self.record_certificate(cert, Role.OPERATOR, name)

    def record_certificate(self, cert: x509.Certificate, role: Role, name: str) -> None:
        """Accept ``cert`` (an operator's or the console's) from now on."""
        self._record_certificate(cert, role, name)
        with self._lock:
            self._valid_serials.add(pki.serial_hex(cert))

    def revoke_certificates_of(self, role: Role, name: str) -> None:
        """Refuse every certificate of ``name`` in ``role`` from now on (an account reset)."""
        self._store.revoke_certificates(name, role.value, self._clock())
        self._reload()  # rare: drops those certificates from the accepted set

    # -- operator actions ----------------------------------------------------------------
    def add_site(
        self, name: str, kind: str, tags: dict[str, str], token_ttl_s: int = 0, actor: str = "coordinator"
    ) -> IssuedToken:
        """Register ``name`` and issue its one-time enrollment token.

        Adding a site that is still pending issues a fresh token and voids the old one.
        """
        validate_site_name(name)
        if kind not in SITE_KINDS:
            raise errors.InvalidArgument(f"site kind must be one of {', '.join(SITE_KINDS)}, not {kind!r}")
        for key, value in tags.items():
            if not key or len(key) > 63 or len(value) > 255:
                raise errors.InvalidArgument(f"tag {key!r}: keys are 1-63 characters, values up to 255")
        ttl = token_ttl_s or self._token_ttl_s
        if ttl <= 0 or ttl > 30 * 24 * 3600:
            raise errors.InvalidArgument("the token lifetime must be between 1 second and 30 days")
        now = self._clock()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store.atomic():
            existing = self._store.get_site(name)
            if existing is not None and existing.enrolled_at is not None:
                state = "revoked" if existing.revoked_at else "enrolled"
                raise errors.AlreadyExists(f"site {name} already exists and is {state}; choose another name")
            if existing is None:
                self._store.add_site(SiteRecord(name=name, kind=kind, tags=tags, created_at=now))
            else:
                self._store.update_site(name, kind=kind, tags=tags)
            self._store.put_token(TokenRecord(hash_token(token), name, now, now + ttl, None))
            self._audit.record(actor, "site.add", name, kind=kind, tags=tags, token_ttl_s=ttl)
        self._refresh(name)
        site = self.get_site(name)
        log.info("site %s (%s) added; enrollment token valid for %d s", name, kind, ttl)
        return IssuedToken(site, token, now + ttl, self._ca.fingerprint)

    def list_sites(self) -> list[SiteRecord]:
        """Every site by name, with its live heartbeat, version and resources."""
        with self._lock:
            records = sorted(self._records.values(), key=lambda s: s.name)
        live = self.presence.snapshot()
        return [self._live(site, live.get(site.name)) for site in records]

    def select(self, keep: Callable[[SiteRecord], bool]) -> list[SiteRecord]:
        """The sites ``keep`` accepts, by name, as stored (``with_live`` adds the live heartbeat):
        filtering thousands of sites this way costs milliseconds, for list pages."""
        with self._lock:
            records = [s for s in self._records.values() if keep(s)]
        records.sort(key=lambda s: s.name)
        return records

    def with_live(self, sites: list[SiteRecord]) -> list[SiteRecord]:
        live = self.presence.snapshot()
        return [self._live(site, live.get(site.name)) for site in sites]

    def get_site(self, name: str) -> SiteRecord:
        with self._lock:
            site = self._records.get(name)
        if site is None:
            raise errors.NotFound(f"no site named {name!r}; `cloud-coordinator sites list` shows them")
        return self._live(site, self.presence.get(name))

    @staticmethod
    def _live(site: SiteRecord, contact) -> SiteRecord:
        if contact is None:
            return site
        return dataclasses.replace(
            site, last_heartbeat=contact.at, version=contact.version or site.version, resources=contact.resources()
        )

    def revoke(self, name: str, actor: str = "coordinator") -> SiteRecord:
        """Refuse the site's certificates from now on and close its open streams."""
        now = self._clock()
        with self._store.atomic():
            site = self.get_site(name)
            if site.revoked_at is not None:
                return site
            self._store.update_site(name, revoked_at=now)
            self._store.revoke_certificates(name, Role.AGENT.value, now)
            self._audit.record(actor, "site.revoke", name)
        self._reload()  # rare: drops the site's certificates from the accepted set
        log.warning("site %s revoked", name)
        for listener in self._revocation_listeners:
            listener(name)
        return self.get_site(name)

    # -- agent actions -------------------------------------------------------------------
    def enroll(self, token: str, csr_pem: bytes, agent_version: str) -> Enrollment:
        """Exchange a valid, unused token and a CSR for a site certificate (all or nothing)."""
        if not token.startswith(TOKEN_PREFIX):
            raise errors.Unauthenticated("the enrollment token is malformed; copy it exactly as printed")
        now = self._clock()
        with self._store.atomic():
            record = self._store.get_token(hash_token(token))
            if record is None:
                raise errors.Unauthenticated("the enrollment token is not recognised; ask the operator for a new one")
            if record.used_at is not None:
                raise errors.Unauthenticated(
                    "the enrollment token was already used; tokens are single use, ask the operator for a new one"
                )
            if record.expires_at <= now:
                raise errors.Unauthenticated(
                    f"the enrollment token expired at {_iso(record.expires_at)}; ask the operator for a new one"
                )
            site = self._store.get_site(record.site)
            if site is None or site.revoked_at is not None:
                raise errors.PermissionDenied(f"site {record.site} can no longer enroll")
            cert = self._ca.sign_csr(csr_pem, Role.AGENT, site.name, self._cert_lifetime)
            self._store.mark_token_used(record.token_hash, now)
            self._record_certificate(cert, Role.AGENT, site.name)
            self._store.update_site(site.name, enrolled_at=now, version=agent_version)
            self._audit.record(f"site:{site.name}", "site.enroll", site.name, certificate=pki.serial_hex(cert))
        self._refresh(site.name, pki.serial_hex(cert))
        log.info("site %s enrolled (certificate %s)", site.name, pki.serial_hex(cert))
        return Enrollment(self.get_site(site.name), pki.cert_to_pem(cert), pki.cert_to_pem(self._ca.cert))

    def renew(self, identity: Identity, csr_pem: bytes) -> bytes:
        """Sign a CSR for a new key of an enrolled, unrevoked site."""
        if identity.role is not Role.AGENT:
            raise errors.PermissionDenied("only sites renew certificates this way")
        self.check_identity(identity)
        with self._store.atomic():
            cert = self._ca.sign_csr(csr_pem, Role.AGENT, identity.name, self._cert_lifetime)
            self._record_certificate(cert, Role.AGENT, identity.name)
            self._audit.record(f"site:{identity.name}", "site.renew", identity.name, certificate=pki.serial_hex(cert))
        self._refresh(identity.name, pki.serial_hex(cert))
        log.info("site %s renewed its certificate (%s)", identity.name, pki.serial_hex(cert))
        return pki.cert_to_pem(cert)

    def _record_certificate(self, cert: x509.Certificate, role: Role, name: str) -> None:
        self._store.add_certificate(
            CertificateRecord(
                serial=pki.serial_hex(cert),
                role=role.value,
                name=name,
                issued_at=self._clock(),
                expires_at=cert.not_valid_after_utc.timestamp(),
            )
        )
        if role is Role.AGENT:
            self._store.update_site(name, cert_expires_at=cert.not_valid_after_utc.timestamp())


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
