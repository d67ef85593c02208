"""The demo's steps: a study, each hospital's allowance for it, and its privacy ledger."""

from __future__ import annotations

import click

from silolink.cli_util import table

from ..world import DemoWorld, indent, say


def run_a_study_with_a_privacy_budget(world: DemoWorld) -> None:
    """A cardiology study: the hospitals accept it with a privacy budget, and their ledgers stop it at that budget."""
    from cloud_coordinator.analytics.client import AnalyticsClient
    from cloud_coordinator.studies.client import StudiesClient
    from edge_agent.client import LocalClient
    from edge_agent.privacy import PrivacyLedger, ledger_path
    from edge_agent.studies.client import LocalStudiesClient
    from silolink import errors
    from silolink.gen.studies.v1 import studies_pb2 as pb

    studies = StudiesClient(world.operator())
    say('cloud-coordinator studies create cardio --description "ECG risk"')
    studies.create("cardio", description="ECG risk")
    say("cloud-coordinator studies invite cardio --sites kind=hospital")
    invited = studies.invite("cardio", ["kind=hospital"])["invited"]
    for name in invited:
        say(
            f"edge-agent studies accept cardio --datasets patients --queries count --epsilon-budget 1 "
            f"--query-epsilon 0.4 --share-budget --data-dir {name}/"
        )
        allowance = pb.Allowance(
            datasets=["patients"], query_kinds=["count"], epsilon_budget=1.0, query_epsilon=0.4, share_budget=True,
            share=pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=2**30),
        )  # fmt: skip
        with LocalClient.for_data_dir(world.site_dir(name)) as local:
            LocalStudiesClient(local).accept("cardio", allowance)
    client = AnalyticsClient(world.operator())
    for _ in range(3):
        say("cloud-coordinator query run --study cardio --dataset patients --sites kind=hospital count")
        try:
            result = client.run_query("patients", "count", ["kind=hospital"], study="cardio")
            click.echo(f"  about {result['count']} patients (each hospital added noise at epsilon 0.4)")
        except errors.ResourceExhausted as e:
            click.echo(f"  refused by the sites: {e.message}")
    first = invited[0]
    say(f"edge-agent privacy ledger --data-dir {first}/")
    spends = PrivacyLedger.open(ledger_path(world.site_dir(first))).spends("cardio")
    rows = [[s.seq, s.study, s.dataset, s.kind, s.work_id[:12], s.mechanism, f"{s.epsilon:g}"] for s in spends]
    click.echo(indent(table(["#", "STUDY", "DATASET", "KIND", "WORK", "MECHANISM", "EPSILON"], rows)))
    say("cloud-coordinator studies show cardio")
    shown = world.wait_until(
        lambda: (
            all(s["budgets"] for s in studies.get("cardio")["sites"] if s["state"] == "accepted")
            and studies.get("cardio")
        ),
        10,
        "the hospitals to share their budgets",
    )
    rows = [
        [s["site"], s["state"], "; ".join(f"{b['dataset']} {b['epsilon_spent']:g} of {b['epsilon_budget']:g}"
                                          for b in s["budgets"])]
        for s in shown["sites"]
    ]  # fmt: skip
    click.echo(indent(table(["SITE", "STATE", "EPSILON SPENT (shared by the site)"], rows)))


def queue_training_in_a_study(world: DemoWorld) -> None:
    """Jobs of a study wait in the work queue until the hospitals have room: the second starts when the first ends."""
    from cloud_coordinator.cli.training import placement
    from cloud_coordinator.studies.client import QueueClient, StudiesClient
    from edge_agent.client import LocalClient
    from edge_agent.studies.client import LocalStudiesClient
    from silolink.gen.studies.v1 import studies_pb2 as pb

    operator = world.operator()
    studies = StudiesClient(operator)
    say(
        "cloud-coordinator studies create ecg-model && cloud-coordinator studies invite ecg-model --sites kind=hospital"
    )
    studies.create("ecg-model", description="a risk model from ECG features")
    invited = studies.invite("ecg-model", ["kind=hospital"])["invited"]
    for name in invited:
        say(f"edge-agent studies accept ecg-model --datasets patients --apps tabular --max-jobs 1 --cpu 1 "
            f"--memory 1GiB --data-dir {name}/")  # fmt: skip
        allowance = pb.Allowance(
            datasets=["patients"], apps=["tabular"], share=pb.ComputeShare(max_jobs=1, cpu=1, memory_bytes=2**30)
        )
        with LocalClient.for_data_dir(world.site_dir(name)) as local:
            LocalStudiesClient(local).accept("ecg-model", allowance)
    spec = dict(app="tabular", dataset="patients", sites=["kind=hospital"], study="ecg-model", cpu=1,
                memory_bytes=2**30, min_sites=len(invited), rounds=1)  # fmt: skip
    jobs = []
    for _ in range(2):
        say("cloud-coordinator train start --study ecg-model --app tabular --dataset patients --sites kind=hospital "
            f"--cpu 1 --memory 1GiB --min-sites {len(invited)} --rounds 1")  # fmt: skip
        job = operator.start_training(**spec)
        click.echo(f"  job {job['job']} {placement(job)}")
        jobs.append(job)
    first, second = jobs
    world.wait_until(lambda: operator.get_job(first["job"])["state"] == "running", 20, "the first job to be placed")
    say("cloud-coordinator queue")
    listed = QueueClient(operator).list()
    for work in listed["work"]:
        where = f"waits: {work['reason']}" if work["state"] == "queued" else f"runs on {', '.join(work['sites'])}"
        click.echo(f"  {work['job']} ({work['study']}) {where}")
    final = ("completed", "failed", "stopped")
    done = world.wait_until(lambda: (j := operator.get_job(second["job"]))["state"] in final and j, 90,
                            "the second job to run once the first released the hospitals")  # fmt: skip
    first = operator.get_job(first["job"])
    for job in (first, done):
        if job["state"] != "completed":
            raise RuntimeError(f"training job {job['job']} {job['state']}: {job['error']}")
    click.echo(f"  job {first['job']} completed and released the hospitals; job {done['job']} then ran on "
               f"{', '.join(done['placed_sites'])} and completed")  # fmt: skip
