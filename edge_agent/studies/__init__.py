"""Studies at the site: which the site accepted, what it allows each, and the gate every
piece of work from the coordinator passes (see ``gate.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def offers(busy_load_per_cpu: float, load=None):
    """The answer to a job offered from the queue (after the gate let it in): yes, unless busy
    and the job asks for room here."""
    import os

    from silolink import errors
    from silolink.gen.studies.v1 import studies_pb2 as pb

    def answer(offer: pb.OfferWorkCommand) -> pb.OfferWorkResult:
        if not (offer.cpu or offer.memory_bytes or offer.gpus):
            return pb.OfferWorkResult()  # reserves nothing here (the default study's undeclared job): as before
        per_cpu = (load or os.getloadavg)()[0] / (os.cpu_count() or 1)
        if per_cpu > busy_load_per_cpu:
            raise errors.Unavailable(
                f"this site is busy (load {per_cpu:.2f} per CPU, above its [studies] busy_load_per_cpu "
                f"{busy_load_per_cpu:g}); place job {offer.job_id} elsewhere or later"
            )
        return pb.OfferWorkResult()

    return answer


def attach(agent: Agent) -> list[ServiceMount]:
    from silolink.db import open_database

    from ..identity import load_identity
    from ..privacy import PrivacyLedger, ledger_path
    from .allowance import StudyBook
    from .gate import StudyGate
    from .remote import CoordinatorStudies
    from .service import SiteStudies
    from .servicer import mount

    book = StudyBook(open_database(agent.layout.state_db))
    ledger = PrivacyLedger.open(ledger_path(agent.layout.root))
    remote = CoordinatorStudies(
        agent.config.coordinator, lambda: load_identity(agent.layout), agent.config.max_message_bytes
    )
    studies = SiteStudies(book, ledger, remote)
    gate = StudyGate(book, ledger, agent.config.analytics, on_spend=studies.report_budgets_soon)
    agent.dispatcher.add_gate(gate)
    agent.dispatcher.register("offer_work", offers(agent.config.studies.busy_load_per_cpu))
    agent.studies = gate  # type: ignore[attr-defined] - the analytics and exchange capabilities ask it
    agent.on_stop(remote.close)
    return [mount(studies)]
