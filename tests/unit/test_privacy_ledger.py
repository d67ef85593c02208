"""The site's privacy ledger on a real SQLite file: spends, refusals, append-only, DP jobs."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from edge_agent.privacy import Budget, PrivacyLedger, ledger_path
from edge_agent.privacy.accounting import gaussian_epsilon
from silolink import errors
from tests.e2e.test_cli import cli


@pytest.fixture
def ledger(tmp_path):
    return PrivacyLedger.open(ledger_path(tmp_path), clock=lambda: 1_800_000_000.0)


def query(ledger, query_id, epsilon, budget=Budget(1.0), study="cardio", dataset="ecg"):
    return ledger.spend_query(
        study=study, dataset=dataset, query_id=query_id, epsilon=epsilon, budget=budget, statistic="count"
    )


def test_queries_spend_until_the_budget_and_the_refusal_says_what_remains(ledger):
    query(ledger, "q1", 0.4)
    query(ledger, "q2", 0.4)
    with pytest.raises(errors.ResourceExhausted) as e:
        query(ledger, "q3", 0.4)
    assert (
        "needs epsilon 0.4" in e.value.message and "epsilon 0.2 of 1 remains (delta 1e-05 of 1e-05)" in e.value.message
    )
    query(ledger, "q4", 0.2)  # exactly what is left still fits
    balance = ledger.balance("cardio", "ecg", Budget(1.0))
    assert balance.spends == 3 and balance.epsilon_spent == pytest.approx(1.0) and balance.epsilon_left == 0
    # Budgets are per study and per dataset: another study, or another dataset, starts afresh.
    query(ledger, "q5", 0.9, study="onco")
    query(ledger, "q6", 0.9, dataset="labs")
    assert [s.work_id for s in ledger.spends("cardio", "ecg")] == ["q1", "q2", "q4"]


def test_one_piece_of_work_is_charged_once(ledger):
    query(ledger, "q1", 0.1)
    with pytest.raises(errors.AlreadyExists):
        query(ledger, "q1", 0.1)
    assert len(ledger.spends()) == 1


def test_the_ledger_refuses_every_update_and_delete(tmp_path, ledger):
    query(ledger, "q1", 0.5)
    conn = sqlite3.connect(ledger_path(tmp_path))
    for statement in ("UPDATE privacy_spends SET epsilon = 0", "DELETE FROM privacy_spends"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()
    assert ledger.spends()[0].epsilon == 0.5


def test_two_spends_at_once_cannot_both_take_the_last_of_a_budget(tmp_path):
    path = ledger_path(tmp_path)
    PrivacyLedger.open(path)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def spend(i: int) -> None:
        book = PrivacyLedger.open(path)  # a connection each, as two processes would have
        barrier.wait()
        try:
            query(book, f"q{i}", 0.3)
            outcomes.append("spent")
        except errors.ResourceExhausted:
            outcomes.append("refused")

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["spent"] * 3
    assert PrivacyLedger.open(path).balance("cardio", "ecg", Budget(1.0)).epsilon_spent == pytest.approx(0.9)


def test_the_site_accounts_a_dp_job_itself_and_gets_flowers_figure():
    # Flower's own RDP accountant, as the coordinator's DP wrapper uses it, for the same job.
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    flower = RdpAccountant(
        PrivacyConfig(
            target_delta=1e-5,
            population_size=3,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    for _ in range(5):
        flower.compose(GaussianPrivacyEvent(noise_multiplier=1.5, sample_size=3, population_size=3))
    assert gaussian_epsilon(1.5, 5, 1e-5) == pytest.approx(flower.get_privacy_spent().epsilon, rel=1e-9)
    assert gaussian_epsilon(3.0, 5, 1e-5) < gaussian_epsilon(1.5, 5, 1e-5) < gaussian_epsilon(1.5, 10, 1e-5)


def test_a_dp_job_pays_for_every_declared_round_up_front_and_gets_no_more(ledger):
    budget = Budget(20.0, 1e-4)
    args = dict(study="cardio", dataset="ecg", job_id="job1", noise_multiplier=1.5, rounds=3, delta=1e-5)
    spend = ledger.answer_training_round(**args, budget=budget)
    assert spend.epsilon == pytest.approx(gaussian_epsilon(1.5, 3, 1e-5))
    assert spend.detail == {"noise_multiplier": 1.5, "rounds": 3} and spend.mechanism == "gaussian-rdp"
    assert ledger.answer_training_round(**args, budget=budget) is None  # round 2: already paid
    assert ledger.answer_training_round(**args, budget=budget) is None  # round 3
    with pytest.raises(errors.ResourceExhausted, match="has had the 3 DP round"):
        ledger.answer_training_round(**args, budget=budget)
    # Less noise than the site accepted, or another dataset, is refused.
    with pytest.raises(errors.PermissionDenied, match="changed its study, dataset or noise"):
        ledger.answer_training_round(**{**args, "noise_multiplier": 0.5}, budget=budget)
    with pytest.raises(errors.PermissionDenied):
        ledger.answer_training_round(**{**args, "dataset": "labs"}, budget=budget)
    assert len(ledger.spends()) == 1


def test_a_dp_job_the_budget_cannot_hold_whole_is_refused_before_its_first_round(ledger):
    need = gaussian_epsilon(1.0, 10, 1e-5)
    with pytest.raises(errors.ResourceExhausted, match=f"needs epsilon {need:.4g}"):
        ledger.answer_training_round(
            study="cardio", dataset="ecg", job_id="big", noise_multiplier=1.0, rounds=10, delta=1e-5,
            budget=Budget(need / 2),
        )  # fmt: skip
    assert ledger.spends() == [] and ledger.training_jobs() == []


@pytest.mark.parametrize(
    "multiplier,rounds,delta", [(0.0, 3, 1e-5), (float("nan"), 3, 1e-5), (1.0, 0, 1e-5), (1.0, 3, 0.0)]
)
def test_nonsense_dp_parameters_are_refused(ledger, multiplier, rounds, delta):
    with pytest.raises(errors.InvalidArgument):
        ledger.answer_training_round(
            study="s", dataset="d", job_id="j", noise_multiplier=multiplier, rounds=rounds, delta=delta,
            budget=Budget(100.0),
        )  # fmt: skip


def test_edge_agent_privacy_ledger_lists_every_spend_with_its_work(tmp_path, ledger):
    query(ledger, "query-7f3a", 0.25)
    ledger.answer_training_round(
        study="cardio", dataset="ecg", job_id="job-42", noise_multiplier=2.0, rounds=2, delta=1e-5,
        budget=Budget(10.0, 1e-4),
    )  # fmt: skip
    listed = json.loads(cli("edge-agent", "privacy", "ledger", "--data-dir", str(tmp_path), "--json").stdout)
    assert [(s["kind"], s["work_id"], s["mechanism"]) for s in listed] == [
        ("query", "query-7f3a", "laplace"),
        ("training", "job-42", "gaussian-rdp"),
    ]
    text = cli("edge-agent", "privacy", "ledger", "--data-dir", str(tmp_path)).stdout
    assert "query-7f3a" in text and "job-42" in text and "study cardio, dataset ecg: epsilon" in text
    assert (
        "no privacy spends"
        in cli("edge-agent", "privacy", "ledger", "--study", "x", "--data-dir", str(tmp_path)).stdout
    )
