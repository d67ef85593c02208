"""Sharing agreements and the sites' published HPKE keys: who may send what to whom, and
which key a sender seals to."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from silolink import errors, pki
from silolink.envelope import PublishedKey, validate_purpose
from silolink.identity import Role, validate_site_name

from ..audit.store import AuditLog
from ..sites.service import SiteService
from .store import AgreementRecord, ExchangeStore, SiteKeyRecord

log = logging.getLogger(__name__)

# A sender may still seal to a key superseded this recently (it fetched the key just before
# the recipient rotated); the recipient keeps old private keys far longer than this.
KEY_GRACE_S = 3600.0


class AgreementRegistry:
    """Operators create agreements, receiving sites accept them, the broker checks them."""

    def __init__(
        self, store: ExchangeStore, sites: SiteService, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._sites = sites
        self._audit = audit
        self._clock = clock
        self.studies: Any = None  # cloud_coordinator.studies.StudyService, set by attach
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str, str], set[str]] = {}  # -> the studies of those agreements
        self._reload()

    def _reload(self) -> None:
        with self._lock:
            active: dict[tuple[str, str, str], set[str]] = {}
            for a in self._store.list_agreements():
                if a.state == "active":
                    active.setdefault((a.sender, a.recipient, a.purpose), set()).add(a.study)
            self._active = active

    def _live_site(self, name: str, role: str) -> None:
        validate_site_name(name)
        site = self._sites.get_site(name)
        if site.revoked_at is not None:
            raise errors.FailedPrecondition(f"the {role} site {name} has been revoked")

    def create(self, sender: str, recipient: str, purpose: str, actor: Any, study: str = "") -> AgreementRecord:
        """A pending agreement; with studies, ``actor`` (the caller's identity) must run work in
        ``study`` and both sites must have accepted it."""
        if self.studies is not None:
            study = self.studies.authorize(study, actor, "analyst")
        actor = str(actor)
        validate_purpose(purpose)
        self._live_site(sender, "sending")
        self._live_site(recipient, "receiving")
        if sender == recipient:
            raise errors.InvalidArgument("an agreement needs two different sites")
        if self.studies is not None:
            self.studies.require_scope(study, [sender, recipient], f"agreement for {purpose!r}")
        for existing in self._store.list_agreements(sender):
            if (existing.sender, existing.recipient, existing.purpose) == (sender, recipient, purpose) and (
                existing.state != "revoked"
            ):
                raise errors.AlreadyExists(
                    f"agreement {existing.id} already lets {sender} send {purpose!r} to {recipient} ({existing.state})"
                )
        record = AgreementRecord(
            id="agr_" + secrets.token_hex(6),
            sender=sender,
            recipient=recipient,
            purpose=purpose,
            state="pending",
            created_at=self._clock(),
            created_by=actor,
            study=study,
        )
        with self._store.atomic():
            self._store.add_agreement(record)
            self._audit.record(
                actor, "agreement.create", record.id, sender=sender, recipient=recipient, purpose=purpose,
                study=study or None,
            )  # fmt: skip
        log.info("agreement %s created: %s may send %s to %s once accepted", record.id, sender, purpose, recipient)
        return record

    def get(self, agreement_id: str) -> AgreementRecord:
        record = self._store.get_agreement(agreement_id)
        if record is None:
            raise errors.NotFound(f"no agreement {agreement_id!r}; `agreements list` shows them")
        return record

    def list(self, site: str | None = None) -> list[AgreementRecord]:
        return self._store.list_agreements(site)

    def page(
        self, site: str = "", state: str = "", limit: int = 0, offset: int = 0
    ) -> tuple[list[AgreementRecord], int]:
        """One page of the agreements matching ``site`` (sender or recipient) and ``state``, and how many match."""
        return self._store.agreements_page(site, state, limit, offset)

    def accept(self, site: str, agreement_id: str) -> AgreementRecord:
        with self._store.atomic():
            record = self.get(agreement_id)
            if record.recipient != site:
                raise errors.PermissionDenied(
                    f"agreement {agreement_id} is for {record.recipient} to accept, not {site}"
                )
            if record.state == "revoked":
                raise errors.FailedPrecondition(f"agreement {agreement_id} was revoked; ask the operator for a new one")
            if record.state == "pending":
                self._store.update_agreement(agreement_id, state="active", accepted_at=self._clock())
                self._audit.record(f"site:{site}", "agreement.accept", agreement_id)
        self._reload()
        return self.get(agreement_id)

    def revoke(self, agreement_id: str, actor: str) -> AgreementRecord:
        with self._store.atomic():
            record = self.get(agreement_id)
            if record.state != "revoked":
                self._store.update_agreement(agreement_id, state="revoked", revoked_at=self._clock())
                self._audit.record(actor, "agreement.revoke", agreement_id)
        self._reload()
        return self.get(agreement_id)

    def check(self, sender: str, recipient: str, purpose: str) -> None:
        """Raise PermissionDenied unless an active agreement allows this exchange."""
        with self._lock:
            studies = self._active.get((sender, recipient, purpose))
        if studies is not None:
            if self.studies is None or any(self.studies.in_study(st, sender, recipient) for st in studies):
                return
            raise errors.PermissionDenied(
                f"the agreement letting {sender} send {purpose!r} to {recipient} belongs to study "
                f"{', '.join(sorted(s or 'default' for s in studies))}, which one of them has left"
            )
        raise errors.PermissionDenied(
            f"no active agreement lets {sender} send {purpose!r} to {recipient}: an operator creates one "
            f"(`cloud-coordinator agreements add --from {sender} --to {recipient} --purpose {purpose}`) "
            f"and {recipient} accepts it (`edge-agent agreements accept ID`)"
        )


class SiteKeys:
    """The sites' HPKE public keys, each checked against the publishing site's certificate."""

    def __init__(
        self, store: ExchangeStore, sites: SiteService, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._sites = sites
        self._audit = audit
        self._clock = clock
        # (site, key id) -> (suite, superseded_at): uploads check keys without touching the
        # database, so they never wait behind a group commit's fsync.
        self._cache: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._cache_lock = threading.Lock()

    def publish(self, site: str, certificate_pem: bytes, key: PublishedKey) -> bool:
        """Record ``key`` as ``site``'s current key; False if it already was."""
        if key.site != site:
            raise errors.PermissionDenied(f"site {site} may publish only its own key, not one for {key.site!r}")
        cert = pki.load_cert(certificate_pem)
        identity = pki.identity_of(cert)
        if identity is None or identity.role is not Role.AGENT or identity.name != site:
            raise errors.PermissionDenied("the presented certificate does not name the publishing site")
        key.verify(cert.public_key())  # type: ignore[arg-type]
        current = self._store.current_key(site)
        unchanged = current is not None and current.key_id == key.key_id
        now = self._clock()
        record = SiteKeyRecord(
            site=site,
            key_id=key.key_id,
            suite=key.suite,
            public_key=key.public_bytes,
            created_at_ms=key.created_at_ms,
            signature=key.signature,
            certificate_pem=certificate_pem.decode(),
            published_at=current.published_at if unchanged and current else now,
        )
        with self._store.atomic():
            self._store.put_key(record, now)
            with self._cache_lock:
                for cached in [k for k in self._cache if k[0] == site]:
                    del self._cache[cached]
            if not unchanged:
                self._audit.record(f"site:{site}", "site.key.publish", site, key_id=key.key_id, suite=key.suite)
        if not unchanged:
            log.info("site %s published exchange key %s (%s)", site, key.key_id, key.suite)
        return not unchanged

    def current(self, site: str) -> SiteKeyRecord:
        record = self._sites.get_site(site)
        if record.revoked_at is not None:
            raise errors.FailedPrecondition(f"site {site} has been revoked; nothing can be sent to it")
        key = self._store.current_key(site)
        if key is None:
            raise errors.FailedPrecondition(
                f"site {site} has not published an exchange key yet; its agent publishes one when it runs"
            )
        return key

    def check_sealed_to(self, site: str, key_id: str, suite: str, now: float) -> None:
        """Raise unless ``key_id`` is the site's current key or one superseded moments ago."""
        with self._cache_lock:
            cached = self._cache.get((site, key_id))
        if cached is None:
            key = self._store.get_key(site, key_id)
            cached = (key.suite, key.superseded_at) if key is not None else ("", None)
            with self._cache_lock:
                self._cache[(site, key_id)] = cached
        key_suite, superseded_at = cached
        if key_suite != suite:
            raise errors.FailedPrecondition(
                f"the envelope is sealed to key {key_id}, which is not a key of {site}; fetch its current key"
            )
        if superseded_at is not None and now - superseded_at > KEY_GRACE_S:
            raise errors.FailedPrecondition(
                f"the envelope is sealed to an old key of {site} ({key_id}); fetch its current key and seal again"
            )

    @staticmethod
    def to_published(record: SiteKeyRecord) -> PublishedKey:
        return PublishedKey(
            site=record.site,
            suite=record.suite,
            key_id=record.key_id,
            public_bytes=record.public_key,
            created_at_ms=record.created_at_ms,
            signature=record.signature,
        )
