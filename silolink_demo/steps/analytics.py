"""The demo's steps: federated analytics."""

from __future__ import annotations

import click

from silolink.cli_util import table

from ..world import DemoWorld, indent, say


def query_across_hospitals(world: DemoWorld) -> None:
    """The operator asks both hospitals for counts and means; only totals across them come back."""
    import math

    from cloud_coordinator.analytics.client import AnalyticsClient
    from silolink import errors

    from .. import datasets

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
    click.echo(indent(table(["DIAGNOSIS", "PATIENTS", "MEAN RADIUS", "SITES", "SAME AS POOLED ROWS"], rows)))
    click.echo("  each hospital computed its own answer and sent it masked; the coordinator saw only the totals")
    say('cloud-coordinator query run --dataset patients --sites kind=hospital count --where "mean_radius > 27"')
    try:
        client.run_query("patients", "count", ["kind=hospital"], where="mean_radius > 27")
    except errors.FailedPrecondition as e:
        click.echo(f"  refused: {e.message}")
