"""The demo's steps, in order. Each capability adds its own step function here."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

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
        if site["kind"] == "hospital":
            configure_hospital(site["data_dir"], "patients")
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


def configure_hospital(data_dir: Path, dataset: str) -> None:
    """The site admin's policy (agent.toml): which dataset federated jobs may train on; and
    Prometheus metrics for the site's monitoring, on a free loopback port."""
    import dataclasses

    from edge_agent.daemon import load_config
    from edge_agent.layout import AgentLayout
    from silolink import config

    cfg = load_config(data_dir, environ={})
    cfg = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, datasets=(dataset,)), metrics_listen="127.0.0.1:0"
    )
    AgentLayout(data_dir).config.write_text(config.dump(cfg))


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


def exchange_sealed_file(world: DemoWorld) -> None:
    """Send a sealed file from one hospital to the other under an agreement."""
    from cloud_coordinator.cli.exchange import ExchangeAdmin
    from edge_agent.client import LocalClient
    from edge_agent.exchange.client import LocalExchangeClient

    a_dir, b_dir = world.sites["hospital-a"]["data_dir"], world.sites["hospital-b"]["data_dir"]
    say("cloud-coordinator agreements add --from hospital-a --to hospital-b --purpose referral")
    agreement = ExchangeAdmin(world.operator()).add_agreement("hospital-a", "hospital-b", "referral")
    click.echo(f"  {agreement['id']}: pending until hospital-b accepts")
    with LocalClient.for_data_dir(a_dir) as a_local, LocalClient.for_data_dir(b_dir) as b_local:
        site_a, site_b = LocalExchangeClient(a_local), LocalExchangeClient(b_local)
        say(f"edge-agent agreements accept {agreement['id']} --data-dir {b_dir}")
        site_b.accept(agreement["id"])
        world.wait_until(lambda: any(k["published"] for k in site_b.keys()), 15, "hospital-b's exchange key")
        letter = a_dir / "referral-letter.txt"
        letter.write_text("Referral: patient 4411, suspected malignancy; scans attached in PACS study 9.\n")
        say(f"edge-agent send --to hospital-b --purpose referral {letter} --data-dir {a_dir}")
        sent = site_a.send(letter, "hospital-b", "referral")
        click.echo(f"  envelope {sent['envelope_id']} sealed with {sent['suite']}, stored by the coordinator")
        say(f"edge-agent inbox --data-dir {b_dir}")
        for entry in site_b.inbox():
            click.echo(f"  {entry['envelope_id']}  from {entry['from']}  {entry['purpose']}  {entry['size']} bytes")
        say(f"edge-agent receive {sent['envelope_id']} --data-dir {b_dir}")
        got = site_b.receive(sent["envelope_id"])
    same = Path(got["path"]).read_bytes() == letter.read_bytes()
    click.echo(f"  signature verified, opened, written to {got['path']} (identical: {same}); ciphertext deleted")
    if not same:
        raise RuntimeError("the received file differs from the sent one")


def verify_audit_chain(world: DemoWorld) -> None:
    """Verify the audit chain, from the operator's side and from each hospital's."""
    from cloud_coordinator.cli.exchange import ExchangeAdmin
    from edge_agent.client import LocalClient
    from edge_agent.exchange.client import LocalExchangeClient

    say("cloud-coordinator audit verify")
    result = ExchangeAdmin(world.operator()).verify_audit()
    click.echo(f"  {result['entries']} entries, every link and signature checks out")
    for name in ("hospital-a", "hospital-b"):
        say(f"edge-agent audit verify --data-dir {world.sites[name]['data_dir']}")
        with LocalClient.for_data_dir(world.sites[name]["data_dir"]) as local:
            site = LocalExchangeClient(local).verify_audit()
        click.echo(f"  {name}: verified {site['entries']} entries; the head it saw before is intact")


def query_across_hospitals(world: DemoWorld) -> None:
    """The operator asks both hospitals for counts and means; only totals across them come back."""
    import math

    from cloud_coordinator.analytics.client import AnalyticsClient
    from silolink import errors

    from . import datasets

    client = AnalyticsClient(world.operator())
    hospitals = [name for name, site in world.sites.items() if site["kind"] == "hospital"]
    _, splits = datasets.breast_cancer_splits(hospitals)
    radius = datasets.feature_names().index("mean_radius")
    rows = []
    for label, diagnosis in (("malignant", 0), ("benign", 1)):
        where = f"diagnosis = {diagnosis}"
        say(f'cloud-coordinator query run --dataset patients --sites kind=hospital count --where "{where}"')
        count = client.run_query("patients", "count", ["kind=hospital"], where=where)
        say(f'cloud-coordinator query run --dataset patients --sites kind=hospital mean mean_radius --where "{where}"')
        mean = client.run_query("patients", "mean mean_radius", ["kind=hospital"], where=where)
        # The demo holds every split, so it can show that the secure total is the pooled one.
        pooled = [
            float(x[radius]) for s in splits.values() for x, y in zip(s["X"], s["y"], strict=True) if y == diagnosis
        ]
        exact = count["count"] == len(pooled) and math.isclose(
            mean["mean"], math.fsum(pooled) / len(pooled), abs_tol=1e-4
        )
        rows.append([label, count["count"], f"{mean['mean']:.3f}", ", ".join(count["sites"]), "yes" if exact else "NO"])
    click.echo(_indent(table(["DIAGNOSIS", "PATIENTS", "MEAN RADIUS", "SITES", "SAME AS POOLED ROWS"], rows)))
    click.echo("  each hospital computed its own answer and sent it masked; the coordinator saw only the totals")
    say('cloud-coordinator query run --dataset patients --sites kind=hospital count --where "mean_radius > 27"')
    try:
        client.run_query("patients", "count", ["kind=hospital"], where="mean_radius > 27")
    except errors.FailedPrecondition as e:
        click.echo(f"  refused: {e.message}")


def roll_out_a_signed_model(world: DemoWorld) -> None:
    """Roll the federated model out to the hospitals only; each verifies it before serving."""
    import numpy as np

    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.client import LocalClient

    from . import datasets

    registry = RegistryClient(world.operator())
    name, version = world.trained_model.split(":")
    say(f"cloud-coordinator models show {name}:{version}")
    (model,) = registry.show(name, version)
    click.echo(f"  {name}:{version}: sha256 {model['sha256'][:12]}, {model['size_bytes']} bytes, created by "
               f"{model['creator']}; manifest signed with the coordinator's model-signing key")  # fmt: skip
    say(f"cloud-coordinator models rollout {name}:{version} --to kind=hospital")
    registry.rollout(name, version, ["kind=hospital"])
    world.wait_until(lambda: all(s["state"] == "active" for s in registry.status(name, version)), 30, "rollout")
    say(f"cloud-coordinator models status {name}:{version}")
    rows = [[s["site"], s["state"], f"{s['bytes_received']}/{s['size_bytes']}", s["reason"]]
            for s in registry.status(name, version)]  # fmt: skip
    click.echo(_indent(table(["SITE", "STATE", "BYTES", "REASON"], rows)))
    hospitals = [n for n, site in world.sites.items() if site["kind"] == "hospital"]
    _, splits = datasets.breast_cancer_splits(hospitals)
    for site in hospitals:
        with LocalClient.for_data_dir(world.sites[site]["data_dir"]) as client:
            served = client.infer(name, {"X": splits[site]["X"]})
        accuracy = float(np.mean(served["label"] == splits[site]["y"]))
        click.echo(f"  {site} serves {name}:{served.version}; on its own patients: accuracy {accuracy:.3f}")
    click.echo("  factory-a was not targeted and got nothing")


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
STEPS = [
    start_coordinator,
    enroll_sites,
    start_agents,
    score_local_data,
    train_together,
    roll_out_a_signed_model,
    query_across_hospitals,
    exchange_sealed_file,
    verify_audit_chain,
    revoke_a_site,
]
