"""The demo's steps, in order: one module per capability, each step a function of the world.

A capability adds its module here and its step to ``STEPS``. Revocation is one-way, so it
stays last; new steps go before it.
"""

from __future__ import annotations

from .analytics import query_across_hospitals
from .console import open_the_console
from .exchange import exchange_sealed_file, verify_audit_chain
from .imaging import train_on_scans_in_place
from .inference import score_local_data
from .registry import roll_out_a_signed_model
from .setup import enroll_sites, start_agents, start_coordinator
from .sites import revoke_a_site
from .studies import queue_training_in_a_study, run_a_study_with_a_privacy_budget
from .training import train_together

STEPS = [
    start_coordinator,
    enroll_sites,
    start_agents,
    score_local_data,
    train_together,
    roll_out_a_signed_model,
    query_across_hospitals,
    run_a_study_with_a_privacy_budget,
    queue_training_in_a_study,
    train_on_scans_in_place,
    exchange_sealed_file,
    verify_audit_chain,
    open_the_console,
    revoke_a_site,
]
