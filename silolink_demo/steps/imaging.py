"""The demo's steps: images where they live (DICOM), trained on together and scored at the sites."""

from __future__ import annotations

from pathlib import Path

import click

from ..world import DemoWorld, say

SCANS_PER_HOSPITAL = 300
# A standard Flower app directory (pyproject, ServerApp, ClientApp) in this repository.
IMAGING_APP = Path(__file__).resolve().parents[2] / "examples" / "imaging-app"


def train_on_scans_in_place(world: DemoWorld) -> None:
    """Each hospital registers its DICOM scans in place (nothing copied, no patient tag read),
    they train an image classifier together with a Flower app, and score their scans with it."""
    import sqlite3

    import numpy as np

    from cloud_coordinator.apps.client import AppsClient
    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.apps.install import install_bundle
    from edge_agent.apps.store import AppStore
    from edge_agent.catalog.sources import add_source
    from edge_agent.catalog.store import Catalog
    from edge_agent.inference.table import score_table
    from edge_agent.layout import AgentLayout
    from edge_agent.models.store import ModelStore
    from silolink.apps.fab import FabLimits, build_fab

    from ..imaging_data import dicom_folder, digits

    hospitals = [name for name, site in world.sites.items() if site["kind"] == "hospital"]
    labels_of = {}
    for i, name in enumerate(hospitals):
        data_dir = world.sites[name]["data_dir"]
        images, labels = digits(SCANS_PER_HOSPITAL, offset=i * SCANS_PER_HOSPITAL)
        folder = dicom_folder(world.root / "pacs" / name, images, labels)
        say(f"edge-agent data add scans --source {folder} --data-dir {data_dir}")
        dataset = add_source(Catalog.open(AgentLayout(data_dir).catalog_db), "scans", str(folder))
        tags = ", ".join(c.name for c in dataset.columns if c.name not in ("file", "label", "image"))
        click.echo(f"  {name}: {dataset.row_count} DICOM scans of {dataset.options['shape']} pixels, read in place; "
                   f"metadata: {tags} (no patient tags)")  # fmt: skip
        labels_of[name] = labels
    operator = world.operator()
    say(f"cloud-coordinator apps push {IMAGING_APP.relative_to(IMAGING_APP.parents[1])}")
    pushed = AppsClient(operator).push(IMAGING_APP)
    for site in hospitals:
        data_dir = world.sites[site]["data_dir"]
        say(f"edge-agent apps install {IMAGING_APP.relative_to(IMAGING_APP.parents[1])} --data-dir {data_dir}")
        layout = AgentLayout(data_dir)
        install_bundle(AppStore.open(layout.state_db, layout.apps_dir), build_fab(IMAGING_APP), "local", FabLimits())
    click.echo(f"  {pushed['name']}:{pushed['version']} published (sha256 {pushed['sha256'][:12]}) and approved at "
               "both hospitals")  # fmt: skip
    say(
        "cloud-coordinator train start --app imaging --dataset scans --sites kind=hospital "
        "--run-config num-server-rounds=2 --model-name digit-scans --watch"
    )
    job = operator.start_training(
        app="imaging", dataset="scans", sites=["kind=hospital"], model_name="digit-scans",
        run_config={"num-server-rounds": 2, "local-epochs": 5},
    )  # fmt: skip
    world.wait_until(
        lambda: operator.get_job(job["job"])["state"] not in ("queued", "running"), 120, f"training job {job['job']}"
    )
    job = operator.get_job(job["job"])
    if job["state"] != "completed":
        raise RuntimeError(f"imaging job {job['job']} {job['state']}: {job['error']}")
    accuracy = job["rounds"][-1]["eval_metrics"]["eval_accuracy"]
    click.echo(f"  job {job['job']} completed: held-out accuracy {accuracy:.3f}; registered as {job['model']}")
    name, version = job["model"].split(":")
    registry = RegistryClient(operator)
    say(f"cloud-coordinator models rollout {name}:{version} --to kind=hospital")
    registry.rollout(name, version, ["kind=hospital"])
    world.wait_until(lambda: all(s["state"] == "active" for s in registry.status(name, version)), 30, "rollout")
    for site in hospitals:
        data_dir = world.sites[site]["data_dir"]
        layout = AgentLayout(data_dir)
        say(f"edge-agent infer table scans --model {name} --output scan_scores --data-dir {data_dir}")
        catalog = Catalog.open(layout.catalog_db)
        result = score_table(catalog, ModelStore.open(layout.state_db, layout.model_blobs), "scans", name, None,
                             "scan_scores")  # fmt: skip
        with sqlite3.connect(layout.catalog_db) as conn:
            predicted = dict(conn.execute("SELECT file, label FROM scan_scores").fetchall())
        truth = labels_of[site]
        right = np.mean([predicted[f"scan-{i:04d}.dcm"] == label for i, label in enumerate(truth)])
        click.echo(f"  {site}: scored {result.rows} scans with {name}:{version}; accuracy {right:.3f}")
