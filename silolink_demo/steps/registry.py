"""The demo's steps: signed models and rollouts."""

from __future__ import annotations

import click

from silolink.cli_util import table

from ..world import DemoWorld, indent, say


def roll_out_a_signed_model(world: DemoWorld) -> None:
    """Roll the federated model out to the hospitals only; each verifies it before serving."""
    import numpy as np

    from cloud_coordinator.registry.client import RegistryClient
    from edge_agent.client import LocalClient

    from .. import datasets

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
    click.echo(indent(table(["SITE", "STATE", "BYTES", "REASON"], rows)))
    hospitals = [n for n, site in world.sites.items() if site["kind"] == "hospital"]
    _, splits = datasets.breast_cancer_splits(hospitals)
    for site in hospitals:
        with LocalClient.for_data_dir(world.sites[site]["data_dir"]) as client:
            served = client.infer(name, {"X": splits[site]["X"]})
        accuracy = float(np.mean(served["label"] == splits[site]["y"]))
        click.echo(f"  {site} serves {name}:{served.version}; on its own patients: accuracy {accuracy:.3f}")
    click.echo("  factory-a was not targeted and got nothing")
