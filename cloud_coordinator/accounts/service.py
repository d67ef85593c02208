"""Operator accounts: roles, one-time setup codes, console passwords and sessions, and the
per-call lookup that turns an operator certificate (or the console acting for a logged-in
account) into the account's current role.

How identity works here:
- A CLI operator holds a certificate naming ``silolink://operator/NAME``. On every call the
  guard asks ``resolve``: the account must exist and be enabled, and its role *now* is the
  role the permission table sees. Disabling or demoting an account applies to its next call.
- The web console holds a certificate of its own (``silolink://console/console``). Alone it
  may only call ``ConsoleSessionService``. After a login (password, and TOTP if set) the
  coordinator hands the console a session token; the console presents it as call metadata
  (``silolink-session``) to act for that account, with that account's role. Only the
  console's certificate may present a session: any other caller doing so is refused, so
  nothing else can assert an account, and the console cannot act for an account nobody
  logged in to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from silolink import errors, pki
from silolink.identity import ACCOUNT_ROLES, Identity, Role, account_role, validate_site_name

from ..audit.store import AuditLog
from .store import AccountRecord, AccountStore
from .throttle import LoginThrottle

log = logging.getLogger(__name__)

SETUP_PREFIX = "slu_"
SESSION_PREFIX = "sls_"
SESSION_METADATA = "silolink-session"
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
TOTP_ISSUER = "silolink"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedSetup:
    account: AccountRecord
    code: str
    expires_at: float
    ca_fingerprint: str


@dataclass(frozen=True)
class Redeemed:
    account: AccountRecord
    certificate_pem: bytes
    ca_certificate_pem: bytes
    totp_uri: str


@dataclass
class Session:
    account: str
    created_at: float
    last_seen: float
    expires_at: float


@dataclass(frozen=True)
class SessionLimits:
    idle_s: float = 1800.0
    max_s: float = 12 * 3600.0


class Certificates:
    """What accounts need from the CA side: issue and record an operator certificate, and
    revoke an account's certificates (a reset after a lost key)."""

    def __init__(self, ca: pki.CertificateAuthority, sites, lifetime_s: int) -> None:
        self._ca = ca
        self._sites = sites  # SiteService: it records every certificate and checks serials
        self._lifetime = dt.timedelta(seconds=lifetime_s)

    @property
    def ca_fingerprint(self) -> str:
        return self._ca.fingerprint

    @property
    def ca_pem(self) -> bytes:
        return pki.cert_to_pem(self._ca.cert)

    def issue(self, csr_pem: bytes, name: str) -> bytes:
        cert = self._ca.sign_csr(csr_pem, Role.OPERATOR, name, self._lifetime)
        self._sites.record_operator_certificate(cert, name)
        return pki.cert_to_pem(cert)

    def revoke(self, name: str) -> None:
        self._sites.revoke_certificates_of(Role.OPERATOR, name)


class AccountService:
    """Everything the coordinator does with operator accounts, independent of transport."""

    def __init__(
        self,
        store: AccountStore,
        certificates: Certificates,
        audit: AuditLog,
        *,
        setup_ttl_s: int,
        sessions: SessionLimits,
        throttle: LoginThrottle,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._certs = certificates
        self._audit = audit
        self._setup_ttl_s = setup_ttl_s
        self._limits = sessions
        self._throttle = throttle
        self._hasher = hasher or PasswordHasher()
        # Verified against when an account is unknown, so a wrong name costs as long as a
        # wrong password and does not tell which names exist.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._clock = clock
        self._lock = threading.Lock()
        self._roles: dict[str, tuple[Role, bool]] = {}  # name -> (role, disabled): read per call
        self._sessions: dict[str, Session] = {}  # sha256(token) -> session
        self._last_totp: dict[str, int] = {}  # account -> last accepted TOTP time step (no replay)
        self._reload()

    def _reload(self) -> None:
        roles = {a.name: (account_role(a.role), a.disabled) for a in self._store.list()}
        with self._lock:
            self._roles = roles

    # -- the per-call check ----------------------------------------------------------------
    def resolve(self, identity: Identity, metadata: Callable[[], Mapping[str, str]]) -> Identity | None:
        """The identity to authorize this call as (see the module docstring)."""
        if identity.role is Role.OPERATOR:
            if SESSION_METADATA in metadata():
                raise errors.PermissionDenied("only the console may act for an account; call with your own certificate")
            role = self._role_of(identity.name)
            return Identity(role, identity.name, identity.serial)
        if identity.role is Role.CONSOLE:
            token = metadata().get(SESSION_METADATA)
            if not token:
                return None  # the console itself: it may only log accounts in
            name = self._session_account(token)
            return Identity(self._role_of(name), name, identity.serial, via="console")
        return None

    def _role_of(self, name: str) -> Role:
        with self._lock:
            found = self._roles.get(name)
        if found is None:
            raise errors.PermissionDenied(f"no operator account named {name!r}; ask an admin to add it")
        role, disabled = found
        if disabled:
            raise errors.PermissionDenied(f"account {name} is disabled; ask an admin")
        return role

    # -- admin actions ---------------------------------------------------------------------
    def add(self, name: str, role: str, actor: str, setup_ttl_s: int = 0) -> IssuedSetup:
        validate_site_name(name)
        account_role(role)
        with self._store.atomic():
            if self._store.get(name) is not None:
                raise errors.AlreadyExists(f"account {name} already exists; `users reset {name}` issues a new code")
            self._store.add(AccountRecord(name=name, role=role, created_at=self._clock(), created_by=actor))
            issued = self._issue_setup(name, setup_ttl_s)
            self._audit.record(actor, "account.add", name, role=role)
        self._reload()
        log.info("account %s (%s) added by %s", name, role, actor)
        return issued

    def reset(self, name: str, actor: str, setup_ttl_s: int = 0) -> IssuedSetup:
        """A new setup code; the account's certificates and sessions stop working now."""
        with self._store.atomic():
            self.get(name)
            issued = self._issue_setup(name, setup_ttl_s)
            self._store.update(name, password_hash=None, totp_secret=None)
            self._certs.revoke(name)
            self._audit.record(actor, "account.reset", name)
        self._end_sessions(name)
        return issued

    def _issue_setup(self, name: str, setup_ttl_s: int) -> IssuedSetup:
        ttl = setup_ttl_s or self._setup_ttl_s
        if ttl <= 0 or ttl > 30 * 24 * 3600:
            raise errors.InvalidArgument("the setup code's lifetime must be between 1 second and 30 days")
        code = SETUP_PREFIX + secrets.token_urlsafe(32)
        expires = self._clock() + ttl
        self._store.update(name, setup_hash=_hash(code), setup_expires_at=expires)
        return IssuedSetup(self.get(name), code, expires, self._certs.ca_fingerprint)

    def list(self) -> list[AccountRecord]:
        return self._store.list()

    def get(self, name: str) -> AccountRecord:
        record = self._store.get(name)
        if record is None:
            raise errors.NotFound(f"no account named {name!r}; `cloud-coordinator users list` shows them")
        return record

    def disable(self, name: str, actor: str) -> AccountRecord:
        with self._store.atomic():
            record = self.get(name)
            if record.disabled:
                return record
            self._refuse_losing_last_admin(record)
            self._store.update(name, disabled_at=self._clock())
            self._audit.record(actor, "account.disable", name)
        self._reload()
        self._end_sessions(name)
        log.warning("account %s disabled by %s", name, actor)
        return self.get(name)

    def set_role(self, name: str, role: str, actor: str) -> AccountRecord:
        account_role(role)
        with self._store.atomic():
            record = self.get(name)
            if record.role == role:
                return record
            if role != Role.ADMIN.value:
                self._refuse_losing_last_admin(record)
            self._store.update(name, role=role)
            self._audit.record(actor, "account.role", name, role=role, previous=record.role)
        self._reload()
        log.info("account %s is now %s (by %s)", name, role, actor)
        return self.get(name)

    def _refuse_losing_last_admin(self, record: AccountRecord) -> None:
        admins = [a for a in self._store.list() if a.role == Role.ADMIN.value and not a.disabled]
        if record.role == Role.ADMIN.value and not record.disabled and len(admins) == 1:
            raise errors.FailedPrecondition(
                f"{record.name} is the last enabled admin; make another account admin first"
            )

    # -- the operator's own actions ----------------------------------------------------------
    def redeem(self, code: str, csr_pem: bytes, password: str, enable_totp: bool) -> Redeemed:
        """Exchange a valid, unused setup code and a CSR for an operator certificate."""
        if not code.startswith(SETUP_PREFIX):
            raise errors.Unauthenticated("the setup code is malformed; copy it exactly as printed")
        if password:
            _check_password(password)
        elif enable_totp:
            raise errors.InvalidArgument("TOTP guards console logins, so it needs a console password too")
        with self._store.atomic():
            record = self._store.by_setup_hash(_hash(code))
            if record is None:
                raise errors.Unauthenticated(
                    "the setup code is not recognised (or was already used); ask an admin for a new one"
                )
            if (record.setup_expires_at or 0) <= self._clock():
                raise errors.Unauthenticated("the setup code has expired; ask an admin for a new one")
            if record.disabled:
                raise errors.PermissionDenied(f"account {record.name} is disabled")
            cert_pem = self._certs.issue(csr_pem, record.name)
            totp_secret = pyotp.random_base32() if enable_totp else None
            self._store.update(
                record.name,
                setup_hash=None,
                setup_expires_at=None,
                set_up_at=self._clock(),
                password_hash=self._hasher.hash(password) if password else None,
                totp_secret=totp_secret,
            )
            self._audit.record(f"operator:{record.name}", "account.setup", record.name, console_password=bool(password))
        log.info("account %s set up", record.name)
        return Redeemed(self.get(record.name), cert_pem, self._certs.ca_pem, self._totp_uri(record.name, totp_secret))

    def set_password(self, name: str, password: str, enable_totp: bool) -> str:
        """Set ``name``'s console password; return the TOTP URI when asked for one."""
        _check_password(password)
        totp_secret = pyotp.random_base32() if enable_totp else None
        with self._store.atomic():
            self.get(name)
            self._store.update(name, password_hash=self._hasher.hash(password), totp_secret=totp_secret)
            self._audit.record(f"operator:{name}", "account.password", name, totp=enable_totp)
        self._end_sessions(name)
        return self._totp_uri(name, totp_secret)

    @staticmethod
    def _totp_uri(name: str, secret: str | None) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER) if secret else ""

    # -- console sessions ------------------------------------------------------------------
    def login(self, name: str, password: str, totp_code: str, client_address: str) -> tuple[str, Session]:
        """Check the password (and TOTP) and open a session; failures are throttled."""
        keys = [f"account:{name}", f"address:{client_address or '?'}"]
        self._throttle.check(keys)
        record = self._store.get(name) if name else None
        ok = self._password_ok(record, password)
        if ok and record is not None and record.totp_secret:
            ok = self._totp_ok(record, totp_code)
        if not ok or record is None or record.disabled:
            if self._throttle.failed(keys):
                log.warning("console logins locked out for account %r / address %s", name, client_address)
                self._audit.record("console", "account.login_locked", name or "?", address=client_address)
            raise errors.Unauthenticated("wrong account name, password or code")
        self._throttle.succeeded(keys)
        now = self._clock()
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        session = Session(name, now, now, now + self._limits.max_s)
        with self._lock:
            self._drop_expired(now)
            self._sessions[_hash(token)] = session
        self._store.update(name, last_login_at=now)
        self._audit.record(f"operator:{name}", "account.login", name, via="console", address=client_address)
        return token, session

    def logout(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(_hash(token), None)

    def _session_account(self, token: str) -> str:
        now = self._clock()
        with self._lock:
            session = self._sessions.get(_hash(token))
            if session is None or now >= session.expires_at or now - session.last_seen >= self._limits.idle_s:
                self._sessions.pop(_hash(token), None)
                raise errors.Unauthenticated("the console session has expired; log in again")
            session.last_seen = now
            return session.account

    def _end_sessions(self, name: str) -> None:
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.account == name]:
                del self._sessions[key]

    def _drop_expired(self, now: float) -> None:
        for key in [
            k for k, s in self._sessions.items() if now >= s.expires_at or now - s.last_seen >= self._limits.idle_s
        ]:
            del self._sessions[key]

    def _password_ok(self, record: AccountRecord | None, password: str) -> bool:
        stored = record.password_hash if record is not None else None
        try:
            self._hasher.verify(stored or self._dummy_hash, password[:MAX_PASSWORD_CHARS])
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    def _totp_ok(self, record: AccountRecord, code: str) -> bool:
        totp = pyotp.TOTP(record.totp_secret)
        now = self._clock()
        for drift in (0, -1, 1):  # one step either way for clock skew
            at = now + drift * totp.interval
            if secrets.compare_digest(totp.at(at), code.strip()):
                step = totp.timecode(dt.datetime.fromtimestamp(at, dt.UTC))
                with self._lock:
                    if self._last_totp.get(record.name, -1) >= step:
                        return False  # a code already used: no replay
                    self._last_totp[record.name] = step
                return True
        return False


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise errors.InvalidArgument(f"the console password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise errors.InvalidArgument(f"the console password may have at most {MAX_PASSWORD_CHARS} characters")


def role_names() -> list[str]:
    return [r.value for r in ACCOUNT_ROLES]
