"""The site's studies: list invitations, accept with an allowance, leave, share budgets.

The site's own record (``StudyBook``) is what the gate checks; the coordinator is told of
each answer so it can schedule by what the site gives. Leaving takes effect at the site at
once, whether or not the coordinator can be reached.
"""

from __future__ import annotations

import logging
import threading

from silolink import errors
from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.studies import DEFAULT, study_name

from ..privacy import PrivacyLedger
from .allowance import Allowance, Membership, StudyBook
from .remote import CoordinatorStudies

log = logging.getLogger(__name__)
STATES = {
    pb.MEMBERSHIP_STATE_INVITED: "invited",
    pb.MEMBERSHIP_STATE_ACCEPTED: "accepted",
    pb.MEMBERSHIP_STATE_LEFT: "left",
}


def share_to_proto(allowance: Allowance | None) -> pb.ComputeShare:
    if allowance is None:
        return pb.ComputeShare()
    s = allowance.share
    return pb.ComputeShare(
        max_jobs=s.max_jobs, cpu=s.cpu, memory_bytes=s.memory_bytes, gpus=s.gpus, windows=list(s.windows),
        utc_offset_s=s.utc_offset_s, cpu_hours_per_day=s.cpu_hours_per_day,
    )  # fmt: skip


class SiteStudies:
    def __init__(self, book: StudyBook, ledger: PrivacyLedger, remote: CoordinatorStudies) -> None:
        self._book = book
        self._ledger = ledger
        self._remote = remote
        self._report_lock = threading.Lock()

    def list(self) -> tuple[list[dict], str]:
        """Every study this site was invited to or holds an answer for; and the coordinator's
        error if it could not be asked (then only what the site knows is listed)."""
        invitations: dict[str, pb.SiteInvitation] = {}
        problem = ""
        try:
            invitations = {i.study: i for i in self._remote.invitations()}
        except errors.SiloError as e:
            problem = e.message
        local = {m.study: m for m in self._book.all()}
        names = sorted(set(invitations) | set(local), key=lambda s: (s != DEFAULT, s))
        out = []
        for name in names:
            member = local.get(name)
            state = member.state if member and member.state != "none" else None
            if state is None:
                state = STATES.get(invitations[name].state, "invited") if name in invitations else "none"
            out.append(
                {
                    "study": name,
                    "description": invitations[name].description if name in invitations else "",
                    "state": state,
                    "allowance": member.allowance.to_dict() if member and member.allowance else None,
                    "budgets": self.balances(name, member),
                }
            )
        return out, problem

    def balances(self, study: str, member: Membership | None = None) -> list[dict]:
        member = member or self._book.get(study)
        budget = member.allowance.budget if member.allowance else None
        datasets = set(member.allowance.datasets) if member.allowance and budget else set()
        datasets |= {d for s, d in self._ledger.pairs() if s == study}
        return [self._ledger.balance(study, d, budget).to_dict() for d in sorted(datasets)]

    def accept(self, study: str, allowance: Allowance | None) -> dict:
        """Accept ``study`` with ``allowance`` (the coordinator must have invited this site)."""
        study = study_name(study)
        if study != DEFAULT and allowance is None:
            raise errors.InvalidArgument("say what this site allows the study (datasets, apps, query kinds, compute)")
        self._remote.accept(study, share_to_proto(allowance))  # PermissionDenied unless invited
        self._book.accept(study, allowance)
        log.info("accepted study %s", study)
        self.report_budgets()
        return self._one(study)

    def leave(self, study: str) -> dict:
        """Leave ``study``: its work is refused here from now on, then the coordinator is told."""
        study = study_name(study)
        if self._book.get(study).state != "accepted":
            raise errors.FailedPrecondition(f"this site is not in study {study!r}")
        self._book.leave(study)
        log.info("left study %s", study)
        try:
            self._remote.leave(study)
        except errors.SiloError as e:
            raise errors.Unavailable(
                f"this site left study {study!r} and refuses its work from now on, but could not tell the "
                f"coordinator ({e.message}); run the command again when it is reachable"
            ) from None
        self.report_budgets()
        return self._one(study)

    def _one(self, study: str) -> dict:
        member = self._book.get(study)
        return {
            "study": study,
            "state": member.state,
            "allowance": member.allowance.to_dict() if member.allowance else None,
            "budgets": self.balances(study, member),
        }

    def report_budgets(self) -> None:
        """Tell the coordinator what remains of the budgets of studies that share them (only those)."""
        shared = []
        for member in self._book.all():
            if member.state == "accepted" and member.allowance and member.allowance.share_budget:
                reports = [
                    pb.BudgetReport(
                        dataset=b["dataset"], epsilon_budget=b["epsilon_budget"] or 0.0,
                        epsilon_spent=b["epsilon_spent"], delta_budget=b["delta_budget"] or 0.0,
                        delta_spent=b["delta_spent"],
                    )
                    for b in self.balances(member.study, member)
                ]  # fmt: skip
                shared.append(pb.StudyBudgets(study=member.study, budgets=reports))
        with self._report_lock:
            try:
                self._remote.report_budgets(shared)
            except errors.SiloError as e:
                log.warning("could not share privacy budgets with the coordinator: %s", e.message)

    def report_budgets_soon(self) -> None:
        """After a spend: report in the background, so the work is not held up by the coordinator."""
        threading.Thread(target=self.report_budgets, name="budget-report", daemon=True).start()
