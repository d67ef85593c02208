"""Federated queries from the coordinator's side: choose sites, run both rounds, add up.

The coordinator relays the sites' signed keys and sums their masked vectors; it never holds
a site's own value. Masked vectors live only in this call's memory and are dropped when it
returns, whether the query succeeded or not. Every query is audited (who, what, which
sites, outcome), never with any site's contribution.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from silolink import errors, pki
from silolink.analytics import secagg
from silolink.analytics.query import STATISTIC_NAMES, check_query, decode_totals, describe, vector_length
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.common.v1.site_pb2 import SiteSelector
from silolink.gen.control.v1 import control_pb2
from silolink.identity import Role

from ..audit.store import AuditLog
from ..control.hub import ControlHub
from ..sites import selector as selector_mod
from ..sites.service import SiteService
from .history import QueryHistory

log = logging.getLogger(__name__)

# Commands of one round waiting for their answers at once: bounds the memory a round over
# ten thousand sites holds (each round-2 command carries its site's neighbours' keys).
ROUND_WINDOW = 2000
# Sites named in an error message at most; the rest are counted.
NAMED_SITES = 10

# Two sites is the least that hides one site's value from the coordinator. (Either of two
# sites, with the operator's result, could work out the other's: sites raise their own
# [analytics] min_sites where that matters.)
MIN_SITES = 2


@dataclass(frozen=True)
class QueryResult:
    query_id: str
    query: pb.Query
    sites: list[str]
    totals: dict[str, Any]
    epsilons: dict[str, float] = field(default_factory=dict)


class QueryService:
    """Runs federated queries over the control hub."""

    def __init__(
        self,
        hub: ControlHub,
        sites: SiteService,
        audit: AuditLog,
        round_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        history: QueryHistory | None = None,
        studies: Any = None,
    ) -> None:
        self._history = history  # each finished query, with its totals (history.py)
        self._studies = studies  # cloud_coordinator.studies.StudyService: who may ask, which sites are in
        self._hub = hub
        self._sites = sites
        self._audit = audit
        self._round_timeout_s = round_timeout_s
        self._clock = clock

    def run(self, actor: Any, query: pb.Query, selectors: Sequence[SiteSelector]) -> QueryResult:
        """Run ``query`` for ``actor`` (the caller's identity) on the sites ``selectors`` pick."""
        query_id = uuid.uuid4().hex
        chosen: list[str] = []
        subject = query.dataset
        failures: dict[str, errors.SiloError] = {}  # each site that refused or could not answer
        asked_at = self._history.clock() if self._history is not None else 0.0
        try:
            check_query(query)
            subject = f"{query.dataset}: {describe(query)}"
            if self._studies is not None:
                query.study = self._studies.authorize(query.study, actor, "analyst")
            chosen = self._choose(selectors, query.study)
            result = self._run(query_id, query, chosen, failures)
        except errors.SiloError as e:
            self._record(str(actor), query_id, query, chosen, outcome="failed", reason=e.message)
            self._keep(actor, query_id, asked_at, query, selectors, chosen, failures, error=e)
            log.warning("query %s by %s (%s) on %d sites failed: %s", query_id, actor, subject, len(chosen), e.message)
            raise
        self._record(str(actor), query_id, query, chosen, outcome="ok")
        self._keep(actor, query_id, asked_at, query, selectors, chosen, failures, result=result)
        log.info("query %s by %s (%s) on %d sites: done", query_id, actor, subject, len(chosen))
        return result

    def _choose(self, selectors: Sequence[SiteSelector], study: str = "") -> list[str]:
        chosen = selector_mod.choose(self._sites.list_sites(), selectors)
        outside: list[str] = []
        if self._studies is not None:  # only sites that accepted the study are asked
            chosen, outside = self._studies.scope(study, chosen)
        if len(chosen) < MIN_SITES:
            found = f" ({', '.join(chosen)})" if chosen else ""
            left_out = f"; not in study {study!r}: {', '.join(outside)}" if outside else ""
            raise errors.FailedPrecondition(
                f"the site selectors match {len(chosen)} enrolled site(s){found}{left_out}; a query needs at least "
                f"{MIN_SITES} so that no single site's value is revealed"
            )
        return chosen

    def _run(
        self, query_id: str, query: pb.Query, sites: list[str], failures: dict[str, errors.SiloError]
    ) -> QueryResult:
        offline = [s for s in sites if not self._hub.is_connected(s)]
        if offline:
            failures.update((s, errors.Unavailable("not connected when the query was asked")) for s in offline)
            raise errors.FailedPrecondition(
                f"site(s) {_names(offline)} are not connected; the query needs every selected site"
            )
        # Sparse masking (silolink.analytics.secagg): one round-1 command for every site,
        # naming the participants by count and digest; in round 2 each site gets only its
        # neighbours' keys. O(N) messages of O(log N) keys, instead of N messages of N keys.
        digest = secagg.participants_digest(sites)
        setup = pb.AnalyticsSetupCommand(
            query_id=query_id, query=query, participant_count=len(sites), participants_digest=digest
        )
        answers = self._round(sites, "analytics_setup", lambda site: setup, "round 1", failures)
        length = vector_length(query)
        peers = {}
        for site in sites:
            answer: pb.AnalyticsSetupResult = answers[site].analytics_setup
            if answer.vector_length != length or not _certificate_names(answer.certificate_pem, site):
                raise errors.FailedPrecondition(f"site {site} answered round 1 in a form this coordinator cannot use")
            peers[site] = pb.PeerKey(
                site=site,
                public_key=answer.public_key,
                signature=answer.signature,
                certificate_pem=answer.certificate_pem,
            )
        ring = secagg.neighbours(sites, query_id, digest)

        def mask_command(site: str) -> pb.AnalyticsMaskCommand:
            return pb.AnalyticsMaskCommand(query_id=query_id, peers=[peers[site], *(peers[n] for n in ring[site])])

        masked = self._round(sites, "analytics_mask", mask_command, "round 2", failures)
        vectors = [list(masked[site].analytics_mask.masked) for site in sites]
        for site, vector in zip(sites, vectors, strict=True):
            if len(vector) != length:
                raise errors.FailedPrecondition(f"site {site} sent a contribution of the wrong length")
        totals = decode_totals(query, secagg.aggregate(vectors))
        epsilons = {site: answers[site].analytics_setup.epsilon for site in sites}
        return QueryResult(query_id, query, sites, totals, epsilons)

    def _round(
        self,
        sites: list[str],
        field_name: str,
        command: Callable[[str], Any],
        step: str,
        failures: dict[str, errors.SiloError],
    ) -> dict[str, control_pb2.CommandResult]:
        """Send one command to every site (at most ``ROUND_WINDOW`` unanswered at once); all
        answer, or the round fails naming who did not (each in ``failures``)."""
        answers: dict[str, control_pb2.CommandResult] = {}
        waiting: dict[concurrent.futures.Future, str] = {}
        remaining = iter(sites)
        deadline = self._clock() + self._round_timeout_s

        def send_more() -> None:
            while len(waiting) < ROUND_WINDOW:
                site = next(remaining, None)
                if site is None:
                    return
                try:
                    waiting[self._hub.request(site, **{field_name: command(site)})] = site
                except errors.SiloError as e:
                    failures[site] = e

        send_more()
        while waiting:
            done, _ = concurrent.futures.wait(
                waiting, timeout=max(0.0, deadline - self._clock()), return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done:
                late = [*waiting.values(), *remaining]
                for future in waiting:
                    future.cancel()
                for site in late:
                    failures[site] = errors.DeadlineExceeded(
                        f"site {site} did not answer within {self._round_timeout_s:.0f} s"
                    )
                break
            for future in done:
                site = waiting.pop(future)
                try:
                    answers[site] = future.result()
                except errors.SiloError as e:
                    failures[site] = e
            send_more()
        if failures:
            raise _round_failure(failures, step)
        return answers

    def _record(self, actor: str, query_id: str, query: pb.Query, sites: list[str], **outcome: str) -> None:
        self._audit.record(
            actor,
            "query.run",
            query_id,
            dataset=query.dataset,
            statistic=STATISTIC_NAMES.get(query.statistic, "?"),
            column=query.column or None,
            where=query.where or None,
            bins=len(query.bin_edges) - 1 if query.bin_edges else None,
            sites=sites,
            study=query.study or None,
            **outcome,
        )

    def _keep(
        self,
        actor: Any,
        query_id: str,
        asked_at: float,
        query: pb.Query,
        selectors: Sequence[SiteSelector],
        sites: list[str],
        failures: dict[str, errors.SiloError],
        result: QueryResult | None = None,
        error: errors.SiloError | None = None,
    ) -> None:
        if self._history is None:
            return
        self._history.keep(
            query_id=query_id,
            asked_by=str(actor),
            asked_at=asked_at,
            query=query,
            selectors=selectors,
            sites=sites,
            failures=failures,
            error=error,
            totals=result.totals if result is not None else None,
            noise=result.epsilons if result is not None else None,
        )


def _certificate_names(pem: bytes, site: str) -> bool:
    try:
        identity = pki.identity_of(pki.load_cert(pem))
    except errors.SiloError:
        return False
    return identity is not None and identity.role is Role.AGENT and identity.name == site


def _names(sites: list[str]) -> str:
    """Up to ``NAMED_SITES`` names, then a count of the rest."""
    if len(sites) <= NAMED_SITES:
        return ", ".join(sites)
    return f"{', '.join(sites[:NAMED_SITES])} and {len(sites) - NAMED_SITES} more"


def _round_failure(failures: dict[str, errors.SiloError], step: str) -> errors.SiloError:
    """One error naming every site that failed a round and why.

    Sites that disconnected or timed out make it ABORTED (run the query again when they are back), not
    UNAVAILABLE: the coordinator itself was reached, and clients read UNAVAILABLE as "cannot
    reach the coordinator".
    """
    gone = (errors.Code.UNAVAILABLE, errors.Code.DEADLINE_EXCEEDED)
    dropped = sorted(s for s, e in failures.items() if e.code in gone)
    refused = sorted(s for s in failures if s not in dropped)
    parts = []
    if refused:
        messages = {failures[s].message for s in refused}
        if len(refused) == 1:
            parts.append(f"site {refused[0]} refused the query: {failures[refused[0]].message}")
        elif len(messages) == 1:
            parts.append(f"sites {_names(refused)} refused the query, each: {messages.pop()}")
        else:
            reasons = "; ".join(f"{s}: {failures[s].message}" for s in refused[:NAMED_SITES])
            parts.append(f"sites {_names(refused)} refused the query ({reasons})")
    if dropped:
        plural = len(dropped) > 1
        parts.append(
            f"site{'s' if plural else ''} {_names(dropped)} dropped out in {step} (disconnected or no answer "
            f"in time), so no total was formed; run the query again when {'they are' if plural else 'it is'} back"
        )
    kind = type(failures[refused[0]]) if refused else errors.Aborted
    return kind("; ".join(parts))
