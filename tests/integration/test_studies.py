"""Studies across a real coordinator and agents: invitations, answers, roles, and isolation.

The rule under test: no path lets work of study A touch a dataset a site allowed only to
study B. Each kind of work is tried against it (queries here; jobs, rollouts and agreements
in test_studies_work.py).
"""

from __future__ import annotations

import pytest

from cloud_coordinator.analytics.client import AnalyticsClient
from cloud_coordinator.studies.client import StudiesClient
from edge_agent.client import LocalClient
from edge_agent.privacy import PrivacyLedger, ledger_path
from edge_agent.studies.client import LocalStudiesClient
from silolink import errors
from silolink.gen.studies.v1 import studies_pb2 as pb
from tests import support
from tests.integration.test_analytics import write_patients

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture
def hospitals(coordinator, make_agent, tmp_path):
    agents = {}
    for i, name in enumerate(HOSPITALS):
        agent = make_agent(name)
        for dataset in ("ecg", "labs"):
            path = write_patients(tmp_path / f"{name}-{dataset}.csv", name, 40 + 10 * i, i)
            agent.catalog.import_csv(path, dataset, label="diagnosis")
        agents[name] = agent
    return agents


def studies(coordinator) -> StudiesClient:
    return StudiesClient(support.operator(coordinator))


def local(agent) -> LocalStudiesClient:
    return LocalStudiesClient(LocalClient(agent.local_address))


def allowance(**kw) -> pb.Allowance:
    share = kw.pop("share", pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=2**30))
    return pb.Allowance(share=share, **kw)


def query(coordinator, dataset, *statistic, study="", sites=("kind=hospital",), **kw):
    with support.operator(coordinator) as op:
        return AnalyticsClient(op).run_query(dataset, " ".join(statistic), sites, study=study, **kw)


def test_a_study_is_created_sites_are_invited_and_each_answers_for_itself(coordinator, hospitals):
    client = studies(coordinator)
    created = client.create("cardio", description="ECG risk", weight=2)
    assert created["members"] == {"operator:admin": "lead"} and created["weight"] == 2
    with pytest.raises(errors.AlreadyExists, match="already exists"):
        client.create("cardio")
    with pytest.raises(errors.InvalidArgument, match="study name"):
        client.create("no spaces")
    with pytest.raises(errors.NotFound, match="no enrolled site matches site=nowhere"):
        client.invite("cardio", ["nowhere"])
    with pytest.raises(errors.NotFound, match="no study named 'onco'"):
        client.invite("onco", ["hospital-a"])
    invited = client.invite("cardio", ["hospital-a", "hospital-b"])
    assert invited["invited"] == ["hospital-a", "hospital-b"]
    assert client.invite("cardio", ["hospital-a"])["invited"] == []  # already invited

    # A site sees its invitations; one that was not invited cannot accept.
    listed, problem = local(hospitals["hospital-a"]).list()
    assert problem == "" and {e["study"]: e["state"] for e in listed} == {"default": "accepted", "cardio": "invited"}
    with pytest.raises(errors.PermissionDenied, match="was not invited to study 'cardio'"):
        local(hospitals["hospital-c"]).accept("cardio", allowance(datasets=["ecg"]))
    window = pb.ComputeShare(max_jobs=2, cpu=4, memory_bytes=8 * 2**30, gpus=1, windows=["22:00-06:00"])
    local(hospitals["hospital-a"]).accept("cardio", allowance(datasets=["ecg"], query_kinds=["count"], share=window))
    with pytest.raises(errors.InvalidArgument, match="time window"):
        local(hospitals["hospital-b"]).accept(
            "cardio", allowance(share=pb.ComputeShare(windows=["22:00"]))
        )  # fmt: skip

    shown = {s["site"]: s for s in client.get("cardio")["sites"]}
    assert shown["hospital-a"]["state"] == "accepted" and shown["hospital-b"]["state"] == "invited"
    assert shown["hospital-a"]["share"]["gpus"] == 1 and shown["hospital-a"]["share"]["windows"] == ["22:00-06:00"]
    # The allowance's datasets are the site's own business: the coordinator never sees them.
    assert "ecg" not in str(client.get("cardio"))

    local(hospitals["hospital-a"]).leave("cardio")
    assert {s["site"]: s["state"] for s in client.get("cardio")["sites"]}["hospital-a"] == "left"
    assert {s["name"] for s in client.list()} == {"default", "cardio"}


def test_roles_per_study_decide_who_sees_and_who_runs_work(coordinator, hospitals, tmp_path):
    from tests.integration.test_accounts import new_account

    client = studies(coordinator)
    client.create("cardio")
    with support.operator(coordinator) as admin, new_account(admin, coordinator, tmp_path, "bob", "operator") as bob:
        as_bob = StudiesClient(bob)
        assert [s["name"] for s in as_bob.list()] == ["default"]  # cardio is not his to see
        with pytest.raises(errors.PermissionDenied, match="has no role in study 'cardio'"):
            as_bob.get("cardio")
        client.set_role("cardio", "bob", "observer")
        assert as_bob.get("cardio")["members"]["operator:bob"] == "observer"
        with pytest.raises(errors.PermissionDenied, match="takes the analyst role"):
            AnalyticsClient(bob).run_query("ecg", "count", ["kind=hospital"], study="cardio")
        with pytest.raises(errors.PermissionDenied, match="takes the lead role"):
            as_bob.invite("cardio", ["hospital-a"])
        client.set_role("cardio", "bob", "lead")
        assert as_bob.invite("cardio", ["hospital-a"])["invited"] == ["hospital-a"]
        # A study bob creates is his to lead; the admin leads every study.
        as_bob.create("bobs-study")
        assert client.get("bobs-study")["members"] == {"operator:bob": "lead"}
        client.set_role("cardio", "bob", None)
        with pytest.raises(errors.PermissionDenied):
            as_bob.get("cardio")
        # A viewer account may look at the studies it has roles in, never create one.
        with new_account(admin, coordinator, tmp_path, "vera", "viewer") as vera:
            with pytest.raises(errors.PermissionDenied):
                StudiesClient(vera).create("veras")
            client.set_role("cardio", "vera", "observer")
            assert StudiesClient(vera).get("cardio")["name"] == "cardio"


def test_a_query_of_study_a_never_reads_a_dataset_allowed_only_to_study_b(coordinator, hospitals):
    client = studies(coordinator)
    for study in ("cardio", "onco"):
        client.create(study)
        client.invite(study, ["kind=hospital"])
    for agent in hospitals.values():
        local(agent).accept("cardio", allowance(datasets=["ecg"], query_kinds=["count", "mean"]))
        local(agent).accept("onco", allowance(datasets=["labs"], query_kinds=["count"]))

    assert query(coordinator, "ecg", "count", study="cardio")["count"] == 40 + 50 + 60
    assert query(coordinator, "labs", "count", study="onco")["count"] == 40 + 50 + 60
    # labs is allowed only to onco: cardio's query is refused by every site, before any read.
    with pytest.raises(errors.PermissionDenied, match="study 'cardio' may not use dataset 'labs' at this site"):
        query(coordinator, "labs", "count", study="cardio")
    with pytest.raises(errors.PermissionDenied, match="may not use query kind 'mean'"):
        query(coordinator, "labs", "mean", "age", study="onco")
    # The default study still reaches both (agent.toml allows every dataset to queries).
    assert query(coordinator, "labs", "count")["count"] == 150

    # A site that leaves a study is no longer asked; too few left is refused, naming them.
    local(hospitals["hospital-c"]).leave("onco")
    assert query(coordinator, "labs", "count", study="onco")["sites"] == ["hospital-a", "hospital-b"]
    local(hospitals["hospital-b"]).leave("onco")
    with pytest.raises(errors.FailedPrecondition, match="not in study 'onco': hospital-b, hospital-c"):
        query(coordinator, "labs", "count", study="onco")
    # And a site refuses on its own even if the coordinator were to ask: the gate at the site.
    with pytest.raises(errors.PermissionDenied, match="left study 'onco'"):
        hospitals["hospital-c"].studies.check_query(pb_query("labs", "onco"))


def pb_query(dataset: str, study: str):
    from silolink.analytics.query import build_query

    q = build_query(dataset, "count")
    q.study = study
    return q


def test_noised_queries_spend_the_studys_budget_and_stop_when_it_is_spent(coordinator, hospitals):
    client = studies(coordinator)
    client.create("cardio")
    client.invite("cardio", ["kind=hospital"])
    for agent in hospitals.values():
        local(agent).accept(
            "cardio",
            allowance(datasets=["ecg"], query_kinds=["count"], min_cohort=10, epsilon_budget=1.0, query_epsilon=0.4,
                      share_budget=agent.site == "hospital-a"),
        )  # fmt: skip
    first = query(coordinator, "ecg", "count", study="cardio")
    assert first["noise"] == {site: 0.4 for site in HOSPITALS}
    assert abs(first["count"] - 150) < 60  # noised, epsilon 0.4 per site
    query(coordinator, "ecg", "count", study="cardio")
    with pytest.raises(errors.ResourceExhausted, match=r"needs epsilon 0.4 .*epsilon 0.2 of 1 remains"):
        query(coordinator, "ecg", "count", study="cardio")

    book = PrivacyLedger.open(ledger_path(hospitals["hospital-b"].layout.root))
    spends = book.spends("cardio", "ecg")
    assert [(s.kind, s.mechanism, s.epsilon) for s in spends] == [("query", "laplace", 0.4)] * 2
    assert spends[0].work_id == first["query_id"]
    listed, _ = local(hospitals["hospital-b"]).list()
    [cardio] = [e for e in listed if e["study"] == "cardio"]
    assert cardio["budgets"][0]["epsilon_spent"] == pytest.approx(0.8)

    # Only hospital-a shares its remaining budget with the coordinator.
    def shared():
        return {s["site"]: s["budgets"] for s in client.get("cardio")["sites"]}

    support.wait_for(lambda: shared()["hospital-a"] and shared()["hospital-a"][0]["epsilon_spent"] > 0.7)
    assert shared()["hospital-b"] == [] and shared()["hospital-c"] == []


def test_a_study_with_a_budget_gets_only_noised_answers(coordinator, hospitals):
    client = studies(coordinator)
    client.create("cardio")
    client.invite("cardio", ["kind=hospital"])
    for agent in hospitals.values():
        local(agent).accept("cardio", allowance(datasets=["ecg"], query_kinds=["count"], epsilon_budget=1.0))
    # No query epsilon and [analytics] epsilon 0: the site will not answer exactly.
    with pytest.raises(errors.PermissionDenied, match="its queries must be noised"):
        query(coordinator, "ecg", "count", study="cardio")
