"""The demo's steps: federated training."""

from __future__ import annotations

import click

from ..world import DemoWorld, say


def train_together(world: DemoWorld) -> None:
    """The hospitals train a classifier together: only model updates travel, never rows."""
    from cloud_coordinator.cli.training import round_line

    operator = world.operator()
    say(
        "cloud-coordinator train start --app tabular --dataset patients --sites kind=hospital --rounds 5 "
        "--local-epochs 2 --model-name breast-cancer-federated --watch"
    )
    job = operator.start_training(
        app="tabular", dataset="patients", sites=["kind=hospital"], rounds=5, local_epochs=2,
        model_name="breast-cancer-federated",
    )  # fmt: skip
    world.wait_until(lambda: operator.get_job(job["job"])["state"] != "running", 120, f"training job {job['job']}")
    job = operator.get_job(job["job"])
    for record in job["rounds"]:
        click.echo("  " + round_line(record).replace("\n", "\n  "))
    if job["state"] != "completed":
        raise RuntimeError(f"training job {job['job']} {job['state']}: {job['error']}")
    click.echo(f"  job {job['job']} completed; the global model was exported to ONNX and registered, signed, "
               f"as {job['model']}")  # fmt: skip
    world.trained_model = job["model"]
