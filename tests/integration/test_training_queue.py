"""Training through the work queue, with a real coordinator, real agents and the tabular app:
jobs of a study wait for room, run on exactly the sites that took them, pay for DP at the
sites' ledgers, survive a site leaving the study, and never touch another study's data."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from cloud_coordinator.studies.client import StudiesClient
from cloud_coordinator.training.jobs import JobService
from cloud_coordinator.training.store import JobSpec
from edge_agent.privacy import PrivacyLedger, ledger_path
from edge_agent.privacy.accounting import gaussian_epsilon
from silolink import errors
from silolink_demo import datasets
from tests import support
from tests.integration.test_studies import allowance, local
from tests.integration.test_training import hospital

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
SLOW = "tabular=tests.integration.flower_apps:slow_app"  # 0.4 s per training round: jobs last a while
GIB = 1024**3
FINAL = ("completed", "failed", "stopped")


@pytest.fixture
def sites(coordinator, make_agent, tmp_path):
    """Three hospitals with patients (and labs), in study cardio: each gives it one job at a time."""
    _, parts = datasets.breast_cancer_splits(list(HOSPITALS))
    agents = {name: hospital(make_agent, tmp_path, name, parts[name], datasets=("patients", "labs"), apps=(SLOW,))
              for name in HOSPITALS}  # fmt: skip
    client = StudiesClient(support.operator(coordinator))
    client.create("cardio")
    client.invite("cardio", ["kind=hospital"])
    for agent in agents.values():
        local(agent).accept("cardio", allowance(datasets=["patients"], apps=["tabular"]))
    support.wait_for(lambda: all(s.resources for s in coordinator.sites.list_sites()), 10, "heartbeats")
    return agents


def start(coordinator, **spec) -> dict:
    with support.operator(coordinator) as op:
        settings = {"app": "tabular", "dataset": "patients", "sites": ["kind=hospital"], "study": "cardio",
                    "cpu": 1, "memory_bytes": GIB // 2, "round_timeout_s": 20, **spec}  # fmt: skip
        return op.start_training(**settings)


def job(coordinator, job_id: str) -> dict:
    with support.operator(coordinator) as op:
        return op.get_job(job_id)


def wait_state(coordinator, job_id: str, states: tuple[str, ...], timeout_s: float = 60) -> dict:
    return support.wait_for(
        lambda: (found := job(coordinator, job_id))["state"] in states and found, timeout_s, f"job {job_id} {states}"
    )


def test_jobs_queue_run_on_exactly_the_sites_that_took_them_and_release_them(coordinator, sites):
    first = start(coordinator, rounds=3, min_sites=2, max_sites=2)
    assert first["state"] in ("queued", "running") and first["study"] == "cardio"
    running = wait_state(coordinator, first["job"], ("running",))
    held = running["placed_sites"]
    assert len(held) == 2 and set(held) < set(HOSPITALS)
    # Each hospital gives cardio one job at a time: the second job waits, saying why.
    second = start(coordinator, rounds=1, min_sites=2)
    assert second["state"] == "queued" and second["position"] == 1, second
    assert "needs 2 of 3 site(s), 1 has room now" in second["reason"]
    assert "2 of 3 sites already run as many jobs of study 'cardio' as they allow" in second["reason"]
    with support.operator(coordinator) as op:
        listed = {j["job"]: j for j in op.list_jobs()}
    assert listed[second["job"]]["state"] == "queued" and listed[second["job"]]["position"] == 1
    # The queue and fair share in the coordinator's metrics, by study.
    from prometheus_client import generate_latest

    scraped = generate_latest(coordinator.metrics.registry).decode()
    assert 'silolink_queue_queued_jobs{study="cardio"} 1.0' in scraped
    assert 'silolink_queue_running_jobs{study="cardio"} 1.0' in scraped
    assert 'silolink_training_jobs{state="queued"} 1.0' in scraped
    share = re.search(r'silolink_study_dominant_share\{study="cardio"\} ([0-9.e-]+)', scraped)
    assert share and float(share.group(1)) > 0
    done = wait_state(coordinator, first["job"], FINAL)
    assert done["state"] == "completed", done["error"]
    # The job ran on its two sites and no other: the third was never sent a message.
    assert all(sorted(r["participants"]) == sorted(held) for r in done["rounds"]), done["rounds"]
    # Its end released the sites: the second job runs, on every site with room (no --max-sites).
    second = wait_state(coordinator, second["job"], FINAL)
    assert second["state"] == "completed", second["error"]
    assert sorted(second["placed_sites"]) == list(HOSPITALS)
    # The job's state is written just before it leaves the queue: give that a moment.
    support.wait_for(lambda: coordinator.queue.snapshot()[:2] == ([], []), 5, "the queue to be empty")


def test_a_job_no_site_could_hold_is_refused_at_once_and_a_queued_job_can_be_stopped(coordinator, sites):
    with pytest.raises(errors.FailedPrecondition, match="3 of 3 give study 'cardio' less than 64 CPU"):
        start(coordinator, cpu=64)
    with support.operator(coordinator) as op:
        assert op.list_jobs() == []  # refused: no job was made
        blocker = start(coordinator, rounds=50, min_sites=3)
        wait_state(coordinator, blocker["job"], ("running",))
        waiting = start(coordinator, rounds=1, min_sites=3)
        assert waiting["state"] == "queued"
        stopped = op.stop_job(waiting["job"])
        assert stopped["state"] == "stopped" and stopped["error"] == "stopped by operator:admin"
        assert waiting["job"] not in coordinator.queue.known()
        op.stop_job(blocker["job"])
        assert wait_state(coordinator, blocker["job"], FINAL)["state"] == "stopped"
    support.wait_for(lambda: not coordinator.queue.known(), 10, "the queue to release the stopped job")


def test_a_dp_job_spends_at_each_sites_ledger_and_the_next_one_is_refused_with_what_remains(
    coordinator, make_agent, tmp_path
):
    _, parts = datasets.breast_cancer_splits(["hospital-a", "hospital-b"])
    agents = [hospital(make_agent, tmp_path, name, parts[name]) for name in ("hospital-a", "hospital-b")]
    client = StudiesClient(support.operator(coordinator))
    client.create("genomics")
    client.invite("genomics", ["kind=hospital"])
    need = gaussian_epsilon(1.0, 2, 1e-5)
    for agent in agents:
        local(agent).accept("genomics", allowance(datasets=["patients"], apps=["tabular"], epsilon_budget=need * 1.5))
    dp = dict(study="genomics", cpu=0, memory_bytes=0, dp_noise_multiplier=1.0, dp_clipping_norm=1.0, rounds=2)
    first = wait_state(coordinator, start(coordinator, **dp)["job"], FINAL, 90)
    assert first["state"] == "completed", first["error"]
    for agent in agents:
        [spend] = PrivacyLedger.open(ledger_path(agent.layout.root)).spends("genomics")
        assert spend.work_id == first["job"] and spend.dataset == "patients"
        assert spend.epsilon == pytest.approx(need)
    # The same job again would overspend: every site refuses its training, saying what remains.
    second = wait_state(coordinator, start(coordinator, **dp)["job"], FINAL, 90)
    assert second["state"] == "failed"
    refusals = [e["reason"] for r in second["rounds"] for e in r["excluded"]] + [second["error"]]
    assert any(f"needs epsilon {need:.4g}" in reason and "remain" in reason for reason in refusals), refusals
    # A study with a privacy budget gets only DP training: a plain job is refused at the sites.
    plain = wait_state(coordinator, start(coordinator, study="genomics", cpu=0, memory_bytes=0, rounds=1)["job"],
                       FINAL, 90)  # fmt: skip
    assert plain["state"] == "failed" and "must be differentially private" in plain["error"], plain["error"]


def test_a_site_leaving_the_study_mid_job_drops_out_or_fails_the_job_with_the_reason(coordinator, sites):
    flexible = start(coordinator, rounds=8, min_sites=2)
    support.wait_for(lambda: len(job(coordinator, flexible["job"])["rounds"]) >= 1, 60, "a first round")
    local(sites["hospital-c"]).leave("cardio")
    done = wait_state(coordinator, flexible["job"], FINAL, 90)
    assert done["state"] == "completed", done["error"]
    assert done["placed_sites"] == ["hospital-a", "hospital-b"]
    assert done["rounds"][-1]["participants"] == ["hospital-a", "hospital-b"]
    # A job that needs every site cannot go on without one: it fails, saying which site left.
    local(sites["hospital-c"]).accept("cardio", allowance(datasets=["patients"], apps=["tabular"]))
    strict = start(coordinator, rounds=50, min_sites=3)
    support.wait_for(lambda: len(job(coordinator, strict["job"])["rounds"]) >= 1, 60, "a first round")
    local(sites["hospital-b"]).leave("cardio")
    failed = wait_state(coordinator, strict["job"], FINAL, 30)
    assert failed["state"] == "failed"
    assert (
        failed["error"] == "site hospital-b left study 'cardio' mid-job; 2 site(s) remain and the job needs at least 3"
    )


def test_a_training_job_of_one_study_never_reads_a_dataset_allowed_only_to_another(coordinator, sites, tmp_path):
    """cardio may train on patients; onco only on labs. No onco job reaches patients, whatever it names."""
    client = StudiesClient(support.operator(coordinator))
    client.create("onco")
    client.invite("onco", ["kind=hospital"])
    for agent in sites.values():
        local(agent).accept("onco", allowance(datasets=["labs"], apps=["tabular"]))
    # Every site refuses the offer itself (its allowance for onco has no patients): nothing runs,
    # and the job fails at once (not after a decline cooldown), naming each site's reason.
    crossing = start(coordinator, study="onco", dataset="patients", rounds=1)
    failed = wait_state(coordinator, crossing["job"], FINAL, 20)
    assert failed["state"] == "failed" and failed["rounds"] == []
    assert failed["error"].startswith("every eligible site refused this job: "), failed["error"]
    for name in HOSPITALS:
        assert f"{name}: study 'onco' may not use dataset 'patients' at this site" in failed["error"]
    # An account with no role in the study cannot queue its work at all.
    from tests.integration.test_accounts import new_account

    bob = new_account(support.operator(coordinator), coordinator, tmp_path, "bob", "operator")
    with bob, pytest.raises(errors.PermissionDenied, match="has no role in study 'cardio'"):
        bob.start_training(app="tabular", dataset="patients", sites=["kind=hospital"], study="cardio")
    # A site outside the study is never asked: the job needs sites that accepted it.
    local(sites["hospital-c"]).leave("onco")
    with pytest.raises(errors.FailedPrecondition, match="not in study 'onco': hospital-c"):
        start(coordinator, study="onco", dataset="labs", sites=["site=hospital-c"])
    # Straight at the site: a training message of onco on patients is refused by its gate.
    from tests.integration.test_studies_work import flower_task, refused

    code, message = refused(sites["hospital-a"], flower=flower_task("onco", "patients"))
    assert code == 7 and "study 'onco' may not use dataset 'patients' at this site" in message


def test_queued_and_running_jobs_survive_a_coordinator_restart(coordinator, sites):
    running = start(coordinator, rounds=200, min_sites=3)
    support.wait_for(lambda: len(job(coordinator, running["job"])["rounds"]) >= 1, 60, "a first round")
    waiting = start(coordinator, rounds=1, min_sites=3)
    assert waiting["state"] == "queued"
    coordinator.stop(0)
    again = support.start_coordinator(coordinator.layout.root, listen=coordinator.address,
                                      enroll_listen=coordinator.enroll_address)  # fmt: skip
    try:
        resumed = job(again, running["job"])
        assert resumed["state"] == "running" and resumed["resumed"] == 1
        assert sorted(resumed["placed_sites"]) == list(HOSPITALS)
        # The running job keeps its reservation: the queued one still waits for it, in its place.
        kept = job(again, waiting["job"])
        assert kept["state"] == "queued" and kept["position"] == 1, kept
        assert [(p.job_id, sorted(p.sites)) for p in again.queue.snapshot()[1]] == [(running["job"], list(HOSPITALS))]
        support.wait_for(lambda: len(job(again, running["job"])["rounds"]) > len(resumed["rounds"]), 60,
                         "a round after the restart")  # fmt: skip
        with support.operator(again) as op:
            op.stop_job(running["job"])
        done = wait_state(again, waiting["job"], FINAL, 90)
        assert done["state"] == "completed", done["error"]
    finally:
        again.stop(0)


def test_the_default_study_keeps_todays_behaviour(coordinator, make_agent, tmp_path):
    """No --study, no needs: the job starts at once on every selected online site, as before."""
    _, parts = datasets.breast_cancer_splits(["hospital-a", "hospital-b"])
    for name in ("hospital-a", "hospital-b"):
        hospital(make_agent, tmp_path, name, parts[name])
    with support.operator(coordinator) as op:
        started = op.start_training(app="tabular", dataset="patients", sites=["kind=hospital"], rounds=1)
    assert started["study"] == "default"
    done = wait_state(coordinator, started["job"], FINAL, 60)
    assert done["state"] == "completed" and done["placed_sites"] == ["hospital-a", "hospital-b"], done
    # It reserved nothing: in the default study, a job that declares no needs takes no room.
    spec = JobSpec(app="tabular", dataset="patients", sites=("kind=hospital",), study="default")
    needs = JobService.needs("j", spec, 1, ["hospital-a"])
    assert (needs.cpu, needs.memory_bytes, needs.gpus) == (0.0, 0, 0)
    needs = JobService.needs("j", replace(spec, study="cardio"), 1, ["hospital-a"])
    assert (needs.cpu, needs.memory_bytes) == (1.0, GIB)  # elsewhere it keeps the study's share


def test_a_waiting_job_says_so_on_the_command_line(coordinator, sites):
    from click.testing import CliRunner

    from cloud_coordinator.cli import main

    blocker = start(coordinator, rounds=50, min_sites=3)
    wait_state(coordinator, blocker["job"], ("running",))
    args = ["--data-dir", str(coordinator.layout.root)]
    runner = CliRunner()
    result = runner.invoke(main, ["train", "start", "--app", "tabular", "--dataset", "patients", "--sites",
                                  "kind=hospital", "--study", "cardio", "--cpu", "1", "--memory", "512MiB",
                                  "--min-sites", "3", "--rounds", "1", *args])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "queued (position 1): needs 3 of 3 site(s), 0 have room now: 3 of 3 sites already run as many jobs of " \
           "study 'cardio' as they allow until" in result.output  # fmt: skip
    result = runner.invoke(main, ["train", "list", "--json", *args])
    listed = {j["job"]: j for j in json.loads(result.output)}
    [queued] = [j for j in listed.values() if j["state"] == "queued"]
    assert queued["position"] == 1 and "already run as many jobs" in queued["reason"]
    result = runner.invoke(main, ["train", "status", queued["job"], *args])
    assert "queued (position 1)" in result.output
    with support.operator(coordinator) as op:
        op.stop_job(blocker["job"])
    assert wait_state(coordinator, queued["job"], FINAL, 60)["state"] == "completed"
