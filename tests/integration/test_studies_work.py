"""Every kind of work against the rule: work of study A never touches what a site allowed only to B.

Each kind is tried twice: through the coordinator (which refuses to send it), and straight
at the site's gate as a command a coordinator could send anyway (the site refuses on its own:
it never trusts the coordinator to have checked).
"""

from __future__ import annotations

import pytest

from cloud_coordinator.cli.exchange import ExchangeAdmin
from cloud_coordinator.registry.client import RegistryClient
from cloud_coordinator.studies.client import StudiesClient
from edge_agent.studies import offers
from silolink import errors
from silolink.gen.control.v1 import control_pb2
from silolink.gen.registry.v1 import registry_pb2
from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.training.v1 import training_pb2
from tests import support
from tests.integration.test_registry import model_file, wait_state
from tests.integration.test_studies import HOSPITALS, allowance, local
from tests.integration.test_studies import hospitals as hospitals  # noqa: F401 - the fixture


@pytest.fixture
def two_studies(coordinator, hospitals):  # noqa: F811
    """cardio may use ecg (and install models, exchange envelopes); onco may use labs only."""
    client = StudiesClient(support.operator(coordinator))
    for study in ("cardio", "onco"):
        client.create(study)
        client.invite(study, ["kind=hospital"])
    for agent in hospitals.values():
        local(agent).accept(
            "cardio",
            allowance(datasets=["ecg"], apps=["tabular"], query_kinds=["count"], models=True, exchange=True),
        )
        local(agent).accept("onco", allowance(datasets=["labs"], apps=["tabular"], query_kinds=["count"]))
    return hospitals


def refused(agent, **body) -> tuple[int, str]:
    """Send ``agent`` a command as a coordinator would; its result's status and message."""
    result = agent.dispatcher.dispatch(control_pb2.Command(command_id="c1", **body))
    return result.status_code, result.status_message


def flower_task(study: str, dataset: str, **kw) -> training_pb2.FlowerTask:
    return training_pb2.FlowerTask(job_id="job-1", app="tabular", dataset=dataset, study=study, **kw)


def test_a_training_job_of_one_study_cannot_read_another_studys_dataset(two_studies):
    site = two_studies["hospital-a"]
    code, message = refused(site, flower=flower_task("cardio", "labs"))
    assert code == 7 and "study 'cardio' may not use dataset 'labs' at this site" in message  # PERMISSION_DENIED
    code, message = refused(site, flower=flower_task("onco", "ecg"))
    assert code == 7 and "study 'onco' may not use dataset 'ecg'" in message
    code, message = refused(
        site, flower=training_pb2.FlowerTask(job_id="j", app="other", dataset="ecg", study="cardio")
    )
    assert code == 7 and "may not use app 'other'" in message
    code, message = refused(site, flower=flower_task("genomics", "ecg"))
    assert code == 7 and "has not accepted study 'genomics'" in message
    # Readying a job's ClientApp ahead of its first message runs the app's code: the same checks.
    code, message = refused(site, start_flower_job=training_pb2.StartFlowerJob(task=flower_task("onco", "ecg")))
    assert code == 7 and "study 'onco' may not use dataset 'ecg'" in message
    # An offer of queued work is checked the same way before a site takes it.
    offer = pb.OfferWorkCommand(job_id="j", study="onco", dataset="ecg", app="tabular")
    code, message = refused(site, offer_work=offer)
    assert code == 7 and "study 'onco' may not use dataset 'ecg'" in message
    cardio = pb.OfferWorkCommand(job_id="j", study="cardio", dataset="ecg", cpu=1)
    site.dispatcher.register("offer_work", offers(2.0, load=lambda: (0.0, 0.0, 0.0)))
    assert refused(site, offer_work=cardio) == (0, "")
    # A site suddenly busy with its own work declines (UNAVAILABLE): the scheduler goes elsewhere.
    site.dispatcher.register("offer_work", offers(2.0, load=lambda: (64.0, 0.0, 0.0)))
    code, message = refused(site, offer_work=cardio)
    assert code == 14 and "this site is busy" in message
    # Work that asks for no room here (the default study's undeclared job) is never declined for load.
    assert refused(site, offer_work=pb.OfferWorkCommand(job_id="j", study="cardio", dataset="ecg")) == (0, "")


def test_a_rollout_of_one_study_reaches_only_sites_that_let_that_study_install_models(
    coordinator, two_studies, tmp_path
):
    with support.operator(coordinator) as op:
        registry = RegistryClient(op)
        registry.push(model_file(tmp_path, "risk"), "risk")
        rollout = registry.rollout("risk", "1", ["kind=hospital"], study="cardio")
        assert rollout["study"] == "cardio"
        for site in HOSPITALS:
            wait_state(registry, "risk", "1", site, "active")
        # onco's allowance has no --models: every site refuses onco's order itself.
        registry.push(model_file(tmp_path, "risk2", 2.0), "risk")
        registry.rollout("risk", "2", ["hospital-a"], study="onco")
        failed = wait_state(registry, "risk", "2", "hospital-a", "failed")
        assert "study 'onco' may not install models at this site" in failed["reason"]
        # A site that left cardio is not sent cardio's rollouts at all.
        local(two_studies["hospital-c"]).leave("cardio")
        with pytest.raises(errors.FailedPrecondition, match="hospital-c have not accepted study 'cardio'"):
            registry.rollout("risk", "2", ["kind=hospital"], study="cardio")
    assert two_studies["hospital-a"].models.get("risk").version == "1"
    order = registry_pb2.InstallModelCommand(rollout_id="r", name="risk", version="9", study="cardio")
    code, message = refused(two_studies["hospital-c"], install_model=order)
    assert code == 7 and "this site left study 'cardio'" in message


def test_an_agreement_of_one_study_carries_nothing_once_a_site_is_out_of_it(coordinator, two_studies, tmp_path):
    a, b = two_studies["hospital-a"], two_studies["hospital-b"]
    with support.operator(coordinator) as op:
        admin = ExchangeAdmin(op)
        with pytest.raises(errors.PermissionDenied, match="may not exchange envelopes with this site"):
            agreement = admin.add_agreement("hospital-a", "hospital-b", "referral", study="onco")
            b.exchange.accept(agreement["id"])  # onco's allowance has no --exchange
        agreement = admin.add_agreement("hospital-a", "hospital-b", "second-opinion", study="cardio")
        assert agreement["study"] == "cardio"
        b.exchange.accept(agreement["id"])
        letter = tmp_path / "letter.txt"
        letter.write_bytes(b"results attached")
        sent = a.exchange.send_file(str(letter), "hospital-b", "second-opinion")
        assert b.exchange.receive(sent.envelope_id, str(tmp_path / "got.txt")).size == len(b"results attached")

        # The recipient leaves cardio: an envelope sent before is not opened, new ones are refused.
        waiting = a.exchange.send_file(str(letter), "hospital-b", "second-opinion")
        local(b).leave("cardio")
        with pytest.raises(errors.PermissionDenied, match="this site left study 'cardio'"):
            b.exchange.receive(waiting.envelope_id, str(tmp_path / "late.txt"))
        assert not (tmp_path / "late.txt").exists()
        with pytest.raises(errors.PermissionDenied, match="belongs to study cardio, which one of them has left"):
            a.exchange.send_file(str(letter), "hospital-b", "second-opinion")
        # The coordinator makes no new cardio agreement with a site outside cardio.
        with pytest.raises(errors.FailedPrecondition, match="hospital-b have not accepted study 'cardio'"):
            admin.add_agreement("hospital-a", "hospital-b", "follow-up", study="cardio")


def test_a_dp_job_in_a_budgeted_study_pays_at_the_site_and_is_cut_off_at_the_budget(coordinator, hospitals):  # noqa: F811
    from edge_agent.privacy.accounting import gaussian_epsilon

    client = StudiesClient(support.operator(coordinator))
    client.create("cardio")
    client.invite("cardio", ["hospital-a"])
    site = hospitals["hospital-a"]
    need = gaussian_epsilon(2.0, 3, 1e-5)
    local(site).accept("cardio", allowance(datasets=["ecg"], apps=["tabular"], epsilon_budget=need * 1.5))

    def train_message() -> bytes:
        from flwr.proto.message_pb2 import Message

        message = Message()
        message.metadata.message_type = "train"
        return message.SerializeToString()

    plain = flower_task("cardio", "ecg", message=train_message())
    code, message = refused(site, flower=plain)
    assert code == 7 and "must be differentially private" in message
    # The gate passes the DP job (the app then fails on the empty message; that is not the gate).
    dp = dict(dp_noise_multiplier=2.0, dp_rounds=3, dp_delta=1e-5)
    for _ in range(3):
        code, message = refused(site, flower=flower_task("cardio", "ecg", message=train_message(), **dp))
        assert "study" not in message, message
    code, message = refused(site, flower=flower_task("cardio", "ecg", message=train_message(), **dp))
    assert code == 8 and "has had the 3 DP round(s)" in message  # RESOURCE_EXHAUSTED
    # A second job of the same size no longer fits what is left of the budget.
    second = flower_task("cardio", "ecg", message=train_message(), **dp)
    second.job_id = "job-2"
    code, message = refused(site, flower=second)
    assert code == 8 and f"needs epsilon {need:.4g}" in message
