"""``query run``: a statistic across sites, computed at each site, totals only."""

from __future__ import annotations

import click

from silolink.cli_util import echo_json, handle_errors, table

from ..analytics.client import AnalyticsClient
from ..operator_client import OperatorClient
from .options import json_option, operator_options


@click.group()
def query() -> None:
    """Ask sites for statistics over their data; only totals across sites come back."""


@query.command("run")
@click.argument("statistic", nargs=-1, required=True)
@click.option("--dataset", required=True, help="The dataset to query, by its name in the sites' catalogs.")
@click.option(
    "--sites",
    "sites",
    multiple=True,
    required=True,
    metavar="SELECTOR",
    help="Sites to ask: kind=hospital, site=NAME (or NAME), a tag such as region=north, terms joined by "
    "commas must all match, or all. Repeat to add more sites.",
)
@click.option("--study", default="", help="The study the query belongs to (default: the default study).")
@click.option("--where", default="", help="A row filter: column op literal (= != < <= > >=) joined by and / or.")
@click.option("--bins", help="Histogram bin edges: ascending values (5,10,15,20) or LO:HI:N for N equal bins.")
@click.option(
    "--clip", metavar="LO:HI", help="Clip the column to [LO, HI] before sum and mean (sites with noise need it)."
)
@json_option
@operator_options
@handle_errors
def run(
    client: OperatorClient,
    statistic: tuple[str, ...],
    dataset: str,
    sites: tuple[str, ...],
    where: str,
    bins: str | None,
    clip: str | None,
    study: str,
    as_json: bool,
) -> None:
    """Compute STATISTIC across sites: count | sum COLUMN | mean COLUMN | histogram COLUMN --bins EDGES.

    Each site checks the query against its own policy, computes over its own rows, refuses
    cohorts smaller than its minimum, and sends a masked contribution: the coordinator learns
    the total across the sites, never a single site's value.
    """
    result = AnalyticsClient(client).run_query(dataset, " ".join(statistic), sites, where, bins, clip, study)
    if as_json:
        echo_json(result)
        return
    what = result["statistic"] + (f" {result['column']}" if result["column"] else "")
    if result["where"]:
        what += f" where {result['where']}"
    click.echo(f"{what} on {dataset} across {len(result['sites'])} sites ({', '.join(result['sites'])})")
    noisy = {s: e for s, e in result["noise"].items() if e > 0}
    if result["statistic"] == "histogram":
        h = result["histogram"]
        edges = h["edges"]
        rows = [[f"< {edges[0]:g}", h["below"]]]
        rows += [[f"[{a:g}, {b:g}{']' if i == len(edges) - 2 else ')'}", c]
                 for i, (a, b, c) in enumerate(zip(edges, edges[1:], h["counts"], strict=False))]  # fmt: skip
        rows.append([f"> {edges[-1]:g}", h["above"]])
        click.echo(table(["BIN", "COUNT"], rows))
    else:
        for name in ("count", "sum", "mean"):
            if name in result:
                value = result[name]
                click.echo(f"  {name}: {value:.6g}" if isinstance(value, float) else f"  {name}: {value}")
    if noisy:
        click.echo("  noise added by " + ", ".join(f"{s} (epsilon {e:g})" for s, e in sorted(noisy.items())))
    click.echo(f"  query {result['query_id']} (audited)")
