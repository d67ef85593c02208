"""The demo's steps: images where they live (DICOM), trained on together and scored at the sites."""

from __future__ import annotations

import click

from ..world import DemoWorld, say

IMAGING_APP = "imaging=silolink_demo.imaging_app:app"
SCANS_PER_HOSPITAL = 400


def train_on_scans_in_place(world: DemoWorld) -> None:
    """Each hospital registers its DICOM scans in place (nothing copied, no patient tag read),
    they train an image classifier together with a Flower app, and score their scans with it."""
    import sqlite3

    import numpy as np

    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.catalog.sources import add_source
    from edge_agent.catalog.store import Catalog
    from edge_agent.inference.table import score_table
    from edge_agent.layout import AgentLayout
    from edge_agent.models.store import ModelStore

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
    say("cloud-coordinator train start --app imaging --dataset scans --sites kind=hospital --rounds 3 --watch")
    job = operator.start_training(
        app="imaging", dataset="scans", sites=["kind=hospital"], rounds=3, local_epochs=3, model_name="digit-scans"
    )
    world.wait_until(lambda: operator.get_job(job["job"])["state"] != "running", 120, f"training job {job['job']}")
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
