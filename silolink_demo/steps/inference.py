"""The demo's steps: site data and local inference."""

from __future__ import annotations

import json
import urllib.request

import click

from silolink.cli_util import table

from ..world import DemoWorld, indent, say


def score_local_data(world: DemoWorld) -> None:
    """Hospitals import their own patients, install a model, and score their rows locally."""
    import numpy as np

    from edge_agent.catalog.store import Catalog
    from edge_agent.client import LocalClient
    from edge_agent.inference.table import score_table
    from edge_agent.layout import AgentLayout
    from edge_agent.models.store import ModelStore

    from .. import datasets

    hospitals = [name for name, site in world.sites.items() if site["kind"] == "hospital"]
    reference, splits = datasets.breast_cancer_splits(hospitals)
    model_file = datasets.reference_model(world.root / "shared" / "breast-cancer.onnx", reference)
    click.echo(f"  a reference model (logistic regression, {len(reference['y'])} public cases) in {model_file.name}")
    rows = []
    for name in hospitals:
        data_dir = world.sites[name]["data_dir"]
        layout = AgentLayout(data_dir)
        export = datasets.write_csv(world.root / "exports" / f"{name}.csv", splits[name])
        say(f"edge-agent data import {export} --name patients --label diagnosis --id patient_id --data-dir {data_dir}")
        catalog = Catalog.open(layout.catalog_db)
        dataset = catalog.import_csv(export, "patients", label="diagnosis", id_column="patient_id")
        say(f"edge-agent models install {model_file.name} --name breast-cancer --version 1 --data-dir {data_dir}")
        models = ModelStore.open(layout.state_db, layout.model_blobs)
        models.install(model_file, "breast-cancer", "1")
        say(f"edge-agent infer table patients --model breast-cancer --output predictions --data-dir {data_dir}")
        scored = score_table(catalog, models, "patients", "breast-cancer", None, "predictions")
        # Accuracy is computed at the site, from its own rows: nothing leaves it.
        truth = dict(next(catalog.read_batches("patients", ["patient_id", "diagnosis"], 10**6)))
        predicted = next(catalog.read_batches("predictions", ["patient_id", "label"], 10**6))
        accuracy = float(np.mean([truth[pid] == label for pid, label in predicted]))
        # And the daemon serves the same model to the site's own systems over its local API.
        with LocalClient.for_data_dir(data_dir) as client:
            live = client.infer("breast-cancer", {"X": splits[name]["X"][:1]})
        rows.append(
            [name, dataset.row_count, len(dataset.columns), f"{scored.model}:{scored.version}", f"{accuracy:.3f}",
             f"{float(live['probabilities'][0][1]):.3f}"]
        )  # fmt: skip
    click.echo(indent(table(["SITE", "PATIENTS", "COLUMNS", "MODEL", "LOCAL ACCURACY", "LIVE INFER P(benign)"], rows)))
    metrics = json.loads(AgentLayout(world.sites[hospitals[0]]["data_dir"]).endpoints.read_text())["metrics_address"]
    say(f"curl http://{metrics}/metrics   # {hospitals[0]}'s monitoring")
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(("silolink_inference_", "silolink_agent_connected")):
                click.echo(f"  {line}")
    say(f"cloud-coordinator sites datasets {hospitals[0]}")
    answer = world.operator().list_site_datasets(hospitals[0])
    described = ", ".join(f"{d['name']} ({len(d.get('columns', []))} columns)" for d in answer["datasets"])
    click.echo(f"  {hospitals[0]} shares {answer['share']} only: {described}; its rows never left it")
