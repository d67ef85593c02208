"""Studies at the site: which the site accepted, what it allows each, and the gate every
piece of work from the coordinator passes (see ``gate.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


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
    agent.studies = gate  # type: ignore[attr-defined] - the analytics and exchange capabilities ask it
    agent.on_stop(remote.close)
    return [mount(studies)]
