"""Studies at the coordinator: create, invite, roles, sites' answers, and who may do what.

Plain logic over ``StudyStore``. Other capabilities ask two things of it before they send
work: ``authorize(study, caller, need)`` (does the caller hold a role in the study that
allows it) and ``scope(study, sites)`` (which of the chosen sites accepted the study). The
sites check again on their side: the coordinator's answer only keeps work from being sent
where it would be refused.

The study named ``default`` always exists: every site is in it unless it left it, and every
operator may use it, so commands that name no study behave as before studies existed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from silolink import errors
from silolink import windows as win
from silolink.gen.common.v1.site_pb2 import SiteSelector
from silolink.identity import Identity, Role
from silolink.studies import DEFAULT, study_name

from ..sites import selector as site_selector
from ..sites.service import SiteService
from .store import ROLES, Study, StudySite, StudyStore

log = logging.getLogger(__name__)
RANK = {role: rank for rank, role in enumerate(ROLES, 1)}
NEEDS = {"observer": "see it", "analyst": "run its work", "lead": "invite sites and give roles"}


def account_name(account: str) -> str:
    account = account.strip()
    return account if ":" in account else f"operator:{account}"


def is_admin(caller: Identity) -> bool:
    """An admin account leads every study."""
    return caller.role is Role.ADMIN


def check_share(share: dict[str, Any]) -> dict[str, Any]:
    """A site's declared compute share, checked: InvalidArgument naming the bad part."""
    for key in ("cpu", "cpu_hours_per_day"):
        value = float(share.get(key, 0))
        if not (value >= 0 and math.isfinite(value)):
            raise errors.InvalidArgument(f"the study share's {key} must be a finite number >= 0")
    if not -14 * 3600 <= int(share.get("utc_offset_s", 0)) <= 14 * 3600:
        raise errors.InvalidArgument("the study share's UTC offset must be within 14 hours")
    windows = list(share.get("windows", []))
    if len(windows) > 24:
        raise errors.InvalidArgument("a study share may have at most 24 time windows")
    win.parse_windows(windows)  # InvalidArgument naming the bad window
    return share


class StudyService:
    def __init__(
        self,
        store: StudyStore,
        sites: SiteService,
        record_audit: Callable[..., object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sites = sites
        self._audit = record_audit
        self._clock = clock
        self._listeners: list[Callable[[str, str], None]] = []
        self._members: dict[str, set[str]] | None = None  # study -> sites accepted (default: sites that left)
        if not store.exists(DEFAULT):
            store.create(DEFAULT, "work that names no study", 1.0, "", clock())

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(site, study)`` after a site accepts, re-declares or leaves a study."""
        self._listeners.append(listener)

    # --- operators ---------------------------------------------------------------------

    def create(self, name: str, description: str, weight: float, caller: Identity) -> Study:
        name = study_name(name)
        if len(description) > 1000:
            raise errors.InvalidArgument("a study's description is at most 1000 characters")
        weight = weight or 1.0
        if not (0 < weight <= 1000 and math.isfinite(weight)):
            raise errors.InvalidArgument("a study's weight must be above 0 and at most 1000 (1 is an equal share)")
        if not self._store.create(name, description, weight, str(caller), self._clock()):
            raise errors.AlreadyExists(f"a study named {name!r} already exists; choose another name")
        self._audit(str(caller), "study.create", name, weight=weight)
        return self._get(name)

    def invite(self, name: str, selectors: Sequence[SiteSelector], caller: Identity) -> tuple[Study, list[str]]:
        name = study_name(name)
        self.authorize(name, caller, "lead")
        if name == DEFAULT:
            raise errors.InvalidArgument("every site is in the default study already; invite sites to your own study")
        if not selectors:
            raise errors.InvalidArgument("say which sites to invite with --sites (a name, kind=hospital, region=north)")
        sites = self._sites.list_sites()
        chosen: set[str] = set()
        for selector in selectors:
            matched = site_selector.choose(sites, [selector])
            if not matched:
                raise errors.NotFound(
                    f"no enrolled site matches {site_selector.render(selector)}; see cloud-coordinator sites list"
                )
            chosen.update(matched)
        invited = [site for site in sorted(chosen) if self._store.invite(name, site, str(caller), self._clock())]
        self._audit(str(caller), "study.invite", name, sites=invited)
        return self._get(name), invited

    def list(self, caller: Identity) -> list[Study]:
        studies = [self._get(name) for name in self._store.names()]
        return [s for s in studies if self._may(s.name, caller, "observer")]

    def get(self, name: str, caller: Identity) -> Study:
        name = study_name(name)
        self.authorize(name, caller, "observer")
        return self._get(name)

    def set_role(self, name: str, account: str, role: str | None, caller: Identity) -> Study:
        name = study_name(name)
        self.authorize(name, caller, "lead")
        if name == DEFAULT:
            raise errors.InvalidArgument("the default study has no roles: every operator may use it")
        if role is not None and role not in RANK:
            raise errors.InvalidArgument(f"study role {role!r}: use one of {', '.join(ROLES)} (or none)")
        account = account_name(account)
        self._store.set_role(name, account, role, str(caller), self._clock())
        self._audit(str(caller), "study.role", name, account=account, role=role or "none")
        return self._get(name)

    def _get(self, name: str) -> Study:
        study = self._store.get(name)
        if study is None:
            raise errors.NotFound(f"no study named {name!r}; see cloud-coordinator studies list")
        if name == DEFAULT:  # members implicitly, unless they left
            listed = {s.site for s in study.sites}
            now = self._clock()
            implicit = [
                StudySite(DEFAULT, site.name, "accepted", site.enrolled_at or now, site.enrolled_at or now)
                for site in self._sites.list_sites()
                if site.enrolled_at is not None and site.revoked_at is None and site.name not in listed
            ]
            study = Study(**{**study.__dict__, "sites": sorted(study.sites + implicit, key=lambda s: s.site)})
        return study

    # --- the checks other capabilities make --------------------------------------------

    def authorize(self, study: str, caller: Identity, need: str = "analyst") -> str:
        """The study's name if ``caller`` may do what ``need`` allows in it; NotFound or PermissionDenied."""
        study = study_name(study)
        if not self._store.exists(study):
            raise errors.NotFound(f"no study named {study!r}; see cloud-coordinator studies list")
        if not self._may(study, caller, need):
            held = self._store.role(study, str(caller))
            raise errors.PermissionDenied(
                f"{caller} {'is ' + held if held else 'has no role'} in study {study!r}; to {NEEDS[need]} takes "
                f"the {need} role or more (its lead grants it: cloud-coordinator studies role {study} {caller} {need})"
            )
        return study

    def _may(self, study: str, caller: Identity, need: str) -> bool:
        if is_admin(caller):
            return True
        if study == DEFAULT:  # what an account may do there is the RPC's own rule, as before studies
            return caller.role is not Role.AGENT
        held = self._store.role(study, str(caller))
        return held is not None and RANK[held] >= RANK[need]

    def accepted_sites(self, study: str) -> set[str]:
        study = study_name(study)
        if study == DEFAULT:
            left = {m.site for m in self._store.all_memberships() if m.study == DEFAULT and m.state == "left"}
            return {s.name for s in self._sites.list_sites() if s.enrolled_at and not s.revoked_at} - left
        return {m.site for m in self._store.all_memberships() if m.study == study and m.state == "accepted"}

    def in_study(self, study: str, *sites: str) -> bool:
        """Whether every one of ``sites`` is in ``study`` now (from memory: a hot path)."""
        members = self._members
        if members is None:
            members = {}
            for m in self._store.all_memberships():
                if (m.study == DEFAULT and m.state == "left") or (m.study != DEFAULT and m.state == "accepted"):
                    members.setdefault(m.study, set()).add(m.site)
            self._members = members
        study = study or DEFAULT
        listed = members.get(study, set())
        if study == DEFAULT:
            return not any(site in listed for site in sites)
        return all(site in listed for site in sites)

    def scope(self, study: str, sites: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split chosen ``sites`` into those in ``study`` and those not (invited only, left, never asked)."""
        study = study_name(study)
        inside, outside = [], []
        for site in sites:
            (inside if self.in_study(study, site) else outside).append(site)
        return inside, outside

    def require_scope(self, study: str, sites: Iterable[str], what: str) -> list[str]:
        """The chosen sites in ``study``; FailedPrecondition naming those outside it."""
        inside, outside = self.scope(study, sites)
        if outside:
            raise errors.FailedPrecondition(
                f"{what}: site(s) {', '.join(outside)} have not accepted study {study_name(study)!r} "
                "(see cloud-coordinator studies show)"
            )
        return inside

    def shares(self) -> list[StudySite]:
        """Every accepted membership with the compute its site gives (for the scheduler)."""
        return [m for m in self._store.all_memberships() if m.state == "accepted"]

    def weights(self) -> dict[str, float]:
        return {name: self._store.get(name).weight for name in self._store.names()}  # type: ignore[union-attr]

    # --- sites -------------------------------------------------------------------------

    def site_studies(self, site: str) -> list[tuple[Study, StudySite]]:
        """The studies ``site`` was invited to, with its standing; the default study first."""
        mine = {m.study: m for m in self._store.of_site(site)}
        if DEFAULT not in mine:
            record = self._sites.get_site(site)
            at = record.enrolled_at if record and record.enrolled_at else self._clock()
            mine[DEFAULT] = StudySite(DEFAULT, site, "accepted", at, at)
        order = sorted(mine, key=lambda s: (s != DEFAULT, s))
        return [(self._store.get(s), mine[s]) for s in order]  # type: ignore[misc]

    def accept(self, site: str, study: str, share: dict[str, Any]) -> StudySite:
        study = study_name(study)
        membership = self._membership(site, study)
        if membership is None and study != DEFAULT:
            raise errors.PermissionDenied(
                f"site {site} was not invited to study {study!r}; ask the study's lead to invite it"
            )
        self._store.answer(study, site, "accepted", check_share(share), self._clock())
        self._audit(f"site:{site}", "study.accept", study)
        self._changed(site, study)
        return self._store.membership(study, site)  # type: ignore[return-value]

    def leave(self, site: str, study: str) -> StudySite:
        study = study_name(study)
        if self._membership(site, study) is None and study != DEFAULT:
            raise errors.NotFound(f"site {site} is not in study {study!r}")
        self._store.answer(study, site, "left", None, self._clock())
        self._audit(f"site:{site}", "study.leave", study)
        self._changed(site, study)
        return self._store.membership(study, site)  # type: ignore[return-value]

    def report_budgets(self, site: str, budgets: dict[str, list[dict[str, Any]]]) -> None:
        accepted = {m.study for m in self._store.of_site(site) if m.state == "accepted"}
        unknown = sorted(set(budgets) - accepted - {DEFAULT})
        if unknown:
            raise errors.FailedPrecondition(
                f"site {site} reports budgets for studies it is not in: {', '.join(unknown)}"
            )
        self._store.set_budgets(site, budgets, self._clock())

    def _membership(self, site: str, study: str) -> StudySite | None:
        if not self._store.exists(study):
            raise errors.NotFound(f"no study named {study!r} at the coordinator")
        return self._store.membership(study, site)

    def _changed(self, site: str, study: str) -> None:
        self._members = None
        for listener in self._listeners:
            try:
                listener(site, study)
            except Exception:  # noqa: BLE001 - a listener's failure must not undo the site's answer
                log.exception("study listener failed for %s in %s", site, study)
