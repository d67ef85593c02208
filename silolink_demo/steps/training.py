"""The demo's steps: federated training, with a Flower app of the user's and the built-in one."""

from __future__ import annotations

from pathlib import Path

import click

from ..world import DemoWorld, say

NUMPY_APP = Path(__file__).resolve().parents[2] / "examples" / "numpy-app"


def train_together(world: DemoWorld) -> None:
    """The hospitals train together: a Flower app, unchanged, and the built-in tabular app."""
    from cloud_coordinator.cli.training import round_line

    operator = world.operator()
    if NUMPY_APP.is_dir():  # a clone of the repository (the examples do not ship in the package)
        run_a_flower_app(world)
    say(
        "cloud-coordinator train start --app tabular --dataset patients --sites kind=hospital --rounds 5 "
        "--local-epochs 2 --model-name breast-cancer-federated --watch"
    )
    job = operator.start_training(
        app="tabular", dataset="patients", sites=["kind=hospital"], rounds=5, local_epochs=2,
        model_name="breast-cancer-federated",
    )  # fmt: skip
    world.wait_until(
        lambda: operator.get_job(job["job"])["state"] not in ("queued", "running"), 120, f"training job {job['job']}"
    )
    job = operator.get_job(job["job"])
    for record in job["rounds"]:
        click.echo("  " + round_line(record).replace("\n", "\n  "))
    if job["state"] != "completed":
        raise RuntimeError(f"training job {job['job']} {job['state']}: {job['error']}")
    click.echo(f"  job {job['job']} completed; the global model was exported to ONNX and registered, signed, "
               f"as {job['model']}")  # fmt: skip
    world.trained_model = job["model"]


def run_a_flower_app(world: DemoWorld) -> None:
    """A standard Flower app (examples/numpy-app) published, approved by each hospital, run unchanged."""
    from cloud_coordinator.apps.client import AppsClient
    from cloud_coordinator.cli.training import round_line
    from edge_agent.apps.install import install_bundle
    from edge_agent.apps.store import AppStore
    from edge_agent.layout import AgentLayout
    from silolink.apps.fab import FabLimits, build_fab

    operator = world.operator()
    say("cloud-coordinator apps push examples/numpy-app")
    pushed = AppsClient(operator).push(NUMPY_APP)
    click.echo(f"  published {pushed['name']}:{pushed['version']} (sha256 {pushed['sha256'][:12]}), manifest signed")
    bundle = build_fab(NUMPY_APP)
    for name, site in world.sites.items():
        if site["kind"] != "hospital":
            continue
        say(f"edge-agent apps install examples/numpy-app --data-dir {site['data_dir']}")
        layout = AgentLayout(Path(site["data_dir"]))
        installed, _ = install_bundle(AppStore.open(layout.state_db, layout.apps_dir), bundle, "local", FabLimits())
        click.echo(f"  {name} approved {installed.ref} (sha256 {installed.sha256[:12]}): that exact code may run")
    say("cloud-coordinator train start --app numpy-app --dataset patients --sites kind=hospital "
        "--run-config num-server-rounds=3 --watch")  # fmt: skip
    job = operator.start_training(app="numpy-app", dataset="patients", sites=["kind=hospital"],
                                  run_config={"num-server-rounds": 3})  # fmt: skip
    world.wait_until(
        lambda: operator.get_job(job["job"])["state"] not in ("queued", "running"), 120, f"training job {job['job']}"
    )
    job = operator.get_job(job["job"])
    for record in job["rounds"]:
        click.echo("  " + round_line(record).replace("\n", "\n  "))
    if job["state"] != "completed":
        raise RuntimeError(f"training job {job['job']} {job['state']}: {job['error']}")
    say(f"cloud-coordinator train logs {job['job']}")
    data, _, _ = operator.read_job_logs(job["job"])
    final = [line for line in data.decode(errors="replace").splitlines() if "final evaluate metrics" in line]
    click.echo(f"  {final[-1].strip() if final else 'job completed'}  (the ServerApp's own output)")
