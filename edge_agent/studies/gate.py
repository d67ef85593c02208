"""The site's check on every piece of work: is it of a study this site accepted, within its allowance?

Runs before every command the coordinator sends (``CommandDispatcher.add_gate``), and from
the analytics and exchange code where the check needs what only they know (a query's
cohort, an agreement's study). Work of the ``default`` study needs only that the site has
not left it: ``agent.toml`` governs it as before. For any other study the allowance must
name the dataset, the app or the query kind, and a study with a privacy budget here gets
only differentially private work, paid for in the ledger before any data is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from silolink import errors
from silolink.analytics.query import STATISTIC_NAMES
from silolink.config import AnalyticsConfig
from silolink.studies import DEFAULT, study_name

from ..privacy import PrivacyLedger
from .allowance import Allowance, Membership, StudyBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryTerms:
    """How this site answers one query: its minimum cohort and noise, and how it pays."""

    min_cohort: int
    epsilon: float
    charge: Callable[[str, float], None]  # (query id, epsilon) -> None, or ResourceExhausted


def _allowed(what: str, name: str, allowed: tuple[str, ...], study: str) -> None:
    if name not in allowed:
        listed = ", ".join(allowed) or "none"
        raise errors.PermissionDenied(
            f"study {study!r} may not use {what} {name!r} at this site (its allowance here lists {what}s: {listed})"
        )


class StudyGate:
    def __init__(
        self,
        book: StudyBook,
        ledger: PrivacyLedger,
        analytics: AnalyticsConfig,
        on_spend: Callable[[], None] = lambda: None,
    ) -> None:
        self._book = book
        self._ledger = ledger
        self._analytics = analytics
        self._on_spend = on_spend

    def __call__(self, kind: str, message: Message) -> None:
        check = {
            "flower": self.check_training,
            "start_flower_job": lambda m: self.check_training(m.task),  # starts the app's code: same checks
            "analytics_setup": lambda m: self.check_query(m.query),
            "install_model": self.check_rollout,
            "offer_work": self.check_offer,
        }.get(kind)
        if check is not None:
            check(message)

    def membership(self, study: str, what: str) -> Membership:
        """This site's accepted membership of ``study``, or PermissionDenied saying why not."""
        study = study_name(study)
        member = self._book.get(study)
        if member.state == "left":
            raise errors.PermissionDenied(
                f"this site left study {study!r}, so it refuses {what} (edge-agent studies accept {study} to rejoin)"
            )
        if member.state != "accepted":
            raise errors.PermissionDenied(
                f"this site has not accepted study {study!r}, so it refuses {what} "
                f"(a site admin accepts it with edge-agent studies accept {study})"
            )
        return member

    # --- training ----------------------------------------------------------------------

    def check_training(self, task: Message) -> None:
        member = self.membership(task.study, f"training job {task.job_id}")
        allowance = member.allowance
        if allowance is None:
            return  # the default study: agent.toml's [training] decides, as before
        _allowed("app", task.app, allowance.apps, member.study)
        _allowed("dataset", task.dataset, allowance.datasets, member.study)
        budget = allowance.budget
        if budget is None:
            return
        if task.dp_noise_multiplier <= 0 or task.dp_rounds < 1:
            raise errors.PermissionDenied(
                f"study {member.study!r} keeps a privacy budget on {task.dataset!r} at this site, so its training "
                "jobs must be differentially private (train start --dp-noise N --dp-clip C)"
            )
        if _message_type(task.message).startswith("train"):
            spend = self._ledger.answer_training_round(
                study=member.study,
                dataset=task.dataset,
                job_id=task.job_id,
                noise_multiplier=task.dp_noise_multiplier,
                rounds=task.dp_rounds,
                delta=task.dp_delta or 1e-5,
                budget=budget,
            )
            if spend is not None:
                log.info(
                    "job %s: epsilon %.4g for %d DP rounds on %s (study %s)", task.job_id, spend.epsilon,
                    task.dp_rounds, task.dataset, member.study,
                )  # fmt: skip
                self._on_spend()

    # --- queries -----------------------------------------------------------------------

    def check_query(self, query: Message) -> None:
        member = self.membership(query.study, f"queries on {query.dataset!r}")
        allowance = member.allowance
        if allowance is None:
            return
        _allowed("dataset", query.dataset, allowance.datasets, member.study)
        _allowed("query kind", STATISTIC_NAMES.get(query.statistic, "?"), allowance.query_kinds, member.study)

    def query_terms(self, query: Message) -> QueryTerms:
        """The cohort, noise and payment for one query (after ``check_query`` let it in)."""
        study = study_name(query.study)
        allowance: Allowance | None = self._book.get(study).allowance
        min_cohort, epsilon = self._analytics.min_cohort, self._analytics.epsilon
        budget = None
        if allowance is not None:
            min_cohort = max(min_cohort, allowance.min_cohort)
            epsilon = allowance.query_epsilon or epsilon
            budget = allowance.budget
            if budget is not None and epsilon <= 0:
                raise errors.PermissionDenied(
                    f"study {study!r} keeps a privacy budget here, so its queries must be noised; the site sets "
                    "the study's query epsilon (edge-agent studies accept --query-epsilon)"
                )

        def charge(query_id: str, spent: float) -> None:
            if spent <= 0:
                return  # no noise, no DP, nothing to record (the default study with epsilon 0)
            statistic = STATISTIC_NAMES.get(query.statistic, "?")
            self._ledger.spend_query(
                study=study, dataset=query.dataset, query_id=query_id, epsilon=spent, budget=budget,
                statistic=statistic,
            )  # fmt: skip
            self._on_spend()

        return QueryTerms(min_cohort, epsilon, charge)

    # --- rollouts, offers, agreements --------------------------------------------------

    def check_rollout(self, order: Message) -> None:
        member = self.membership(order.study, f"model {order.name}:{order.version}")
        if member.allowance is not None and not member.allowance.models:
            raise errors.PermissionDenied(
                f"study {member.study!r} may not install models at this site (its allowance here has no --models)"
            )

    def check_offer(self, offer: Message) -> None:
        member = self.membership(offer.study, f"job {offer.job_id}")
        if member.allowance is not None:
            _allowed("dataset", offer.dataset, member.allowance.datasets, member.study)
            if offer.app:
                _allowed("app", offer.app, member.allowance.apps, member.study)

    def check_exchange(self, study: str, what: str) -> None:
        member = self.membership(study, what)
        if member.allowance is not None and not member.allowance.exchange:
            raise errors.PermissionDenied(
                f"study {member.study!r} may not exchange envelopes with this site "
                "(its allowance here has no --exchange)"
            )

    def accept_agreement(self, agreement_id: str, sender: str, purpose: str, study: str) -> None:
        """Before this site accepts an agreement: it must be of a study the site is in, with exchange allowed."""
        self.check_exchange(study, f"agreement {agreement_id}")
        self._book.record_agreement(agreement_id, sender, purpose, study_name(study))

    def check_envelope(self, sender: str, purpose: str) -> None:
        """Before an envelope is opened: some accepted agreement for it must be of a study the site is still in."""
        studies = self._book.agreement_studies(sender, purpose) or {DEFAULT}  # accepted before studies existed
        refusals = []
        for study in sorted(studies):
            try:
                self.check_exchange(study, f"envelopes from {sender} for {purpose!r}")
                return
            except errors.PermissionDenied as e:
                refusals.append(e.message)
        raise errors.PermissionDenied("; ".join(refusals))


def _message_type(data: bytes) -> str:
    """The Flower message's type ("train", "evaluate", "query..."), read from its envelope only."""
    from flwr.proto.message_pb2 import Message as MessageProto

    proto = MessageProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise errors.InvalidArgument("the Flower message could not be decoded") from None
    return proto.metadata.message_type


__all__ = ["DEFAULT", "QueryTerms", "StudyGate"]
