"""The demo's steps, in order. Each capability adds its own step function here."""

from __future__ import annotations

import time

import click

from cloud_coordinator import bootstrap
from cloud_coordinator.cli.sites import enroll_command
from edge_agent import enroll as enroll_mod
from silolink.cli_util import table

from .world import DemoWorld, say

SITES = [
    ("hospital-a", "hospital", {"region": "north"}),
    ("hospital-b", "hospital", {"region": "south"}),
    ("factory-a", "factory", {"line": "press-4"}),
]


def start_coordinator(world: DemoWorld) -> None:
    """Set up and start the cloud coordinator (its own CA, mTLS on loopback)."""
    data_dir = world.coordinator_dir
    say(f"cloud-coordinator init --data-dir {data_dir} --hostname localhost")
    result = bootstrap.init(data_dir, ["localhost"])
    click.echo(f"  CA fingerprint {result.ca_fingerprint}")
    say(f"cloud-coordinator serve --data-dir {data_dir} --listen 127.0.0.1:0 --enroll-listen 127.0.0.1:0")
    world.spawn(
        "coordinator",
        [
            "cloud_coordinator",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        data_dir / "run" / "endpoints.json",
    )
    endpoints = world.endpoints()
    click.echo(
        f"  serving agents and operators on {endpoints['address']} (mTLS), enrollment on "
        f"{endpoints['enroll_address']}, metrics on http://{endpoints['metrics_address']}/metrics"
    )


def enroll_sites(world: DemoWorld) -> None:
    """Enroll two hospitals and a factory: keys made at each site, one-time tokens."""
    operator = world.operator()
    for name, kind, tags in SITES:
        tag_args = " ".join(f"--tag {k}={v}" for k, v in tags.items())
        say(f"cloud-coordinator sites add {name} --kind {kind} {tag_args}")
        added = operator.add_site(name, kind, tags)
        data_dir = world.site_dir(name)
        say(f"{enroll_command({**added, 'token': added['token'][:10] + '...'})} --data-dir {data_dir}")
        result = enroll_mod.enroll(
            data_dir, added["coordinator_address"], added["token"], added["ca_fingerprint"], added["enroll_address"]
        )
        world.sites[name] = {"kind": kind, "data_dir": data_dir}
        click.echo(f"  {name}: enrolled, certificate valid until {result.certificate_expires_at}")


def start_agents(world: DemoWorld) -> None:
    """Start each site's agent daemon; it dials out and holds a control stream."""
    for name, site in world.sites.items():
        say(f"edge-agent run --data-dir {site['data_dir']}")
        world.spawn(
            f"agent-{name}",
            ["edge_agent", "run", "--data-dir", str(site["data_dir"])],
            site["data_dir"] / "run" / "endpoints.json",
        )
    operator = world.operator()
    world.wait_until(
        lambda: all(s["state"] == "online" and s["last_heartbeat"] for s in operator.list_sites()),
        30,
        "all sites online",
    )
    time.sleep(1.2)  # let a heartbeat with resources arrive
    say("cloud-coordinator sites list")
    rows = [
        [
            s["name"],
            s["kind"],
            s["state"],
            s["version"],
            s["resources"]["cpu_count"],
            f"{s['resources']['memory_available_bytes'] / 2**30:.1f} GiB",
            ",".join(f"{k}={v}" for k, v in s["tags"].items()),
        ]
        for s in operator.list_sites()
    ]
    click.echo(_indent(table(["SITE", "KIND", "STATE", "VERSION", "CPUS", "MEM FREE", "TAGS"], rows)))


def score_local_data(world: DemoWorld) -> None:
    """Hospitals import their own patients, install a model, and score their rows locally."""
    import numpy as np

    from edge_agent.catalog.store import Catalog
    from edge_agent.client import LocalClient
    from edge_agent.inference.table import score_table
    from edge_agent.layout import AgentLayout
    from edge_agent.models.store import ModelStore

    from . import datasets

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
    click.echo(_indent(table(["SITE", "PATIENTS", "COLUMNS", "MODEL", "LOCAL ACCURACY", "LIVE INFER P(benign)"], rows)))
    say(f"cloud-coordinator sites datasets {hospitals[0]}")
    answer = world.operator().list_site_datasets(hospitals[0])
    described = ", ".join(f"{d['name']} ({len(d.get('columns', []))} columns)" for d in answer["datasets"])
    click.echo(f"  {hospitals[0]} shares {answer['share']} only: {described}; its rows never left it")


def roll_out_a_signed_model(world: DemoWorld) -> None:
    """Publish a signed model once and roll it out to the hospitals only."""
    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.client import LocalClient

    registry = RegistryClient(world.operator())
    model_file = world.root / "shared" / "breast-cancer.onnx"
    say(f"cloud-coordinator models push {model_file.name} --name breast-cancer --version 2")
    model = registry.push(model_file, "breast-cancer", "2", "reference logistic regression, signed by the registry")
    click.echo(f"  registered breast-cancer:2 (sha256 {model['sha256'][:12]}, {model['size_bytes']} bytes), "
               "manifest signed with the coordinator's model-signing key")  # fmt: skip
    say("cloud-coordinator models rollout breast-cancer:2 --to kind=hospital")
    rollout = registry.rollout("breast-cancer", "2", ["kind=hospital"])
    sites = [s["site"] for s in rollout["sites"]]
    world.wait_until(
        lambda: all(s["state"] == "active" for s in registry.status("breast-cancer", "2")), 30, "rollout active"
    )
    say("cloud-coordinator models status breast-cancer:2")
    rows = [[s["site"], s["state"], f"{s['bytes_received']}/{s['size_bytes']}", s["reason"]]
            for s in registry.status("breast-cancer", "2")]  # fmt: skip
    click.echo(_indent(table(["SITE", "STATE", "BYTES", "REASON"], rows)))
    import numpy as np

    with LocalClient.for_data_dir(world.sites[sites[0]]["data_dir"]) as client:
        served = client.infer("breast-cancer", {"X": np.zeros((1, 30), np.float32)}).version
    click.echo(f"  each hospital checked the signature and digest before activating; {sites[0]} now serves "
               f"breast-cancer:{served}; factory-a was not targeted and got nothing")  # fmt: skip


def revoke_a_site(world: DemoWorld) -> None:
    """Show revocation: a factory cut off at once, its stream closed."""
    operator = world.operator()
    say("cloud-coordinator sites revoke factory-a")
    operator.revoke_site("factory-a")
    state = {s["name"]: s["state"] for s in operator.list_sites()}
    click.echo(f"  factory-a is now {state['factory-a']}; the hospitals stay {state['hospital-a']}")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# Revocation is one-way, so it stays last; capabilities insert their steps before it.
STEPS = [start_coordinator, enroll_sites, start_agents, score_local_data, roll_out_a_signed_model, revoke_a_site]
