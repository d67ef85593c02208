"""``query run`` (a statistic across sites, computed at each site, totals only) and
``query history`` (the queries run, with their totals and the sites that refused)."""

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


@query.command("history")
@click.option("--dataset", default="", help="Only queries on this dataset.")
@click.option("--by", "asked_by", default="", metavar="ACCOUNT", help="Only queries asked by this account.")
@click.option("--site", default="", help="Only queries that asked this site.")
@click.option(
    "--outcome",
    type=click.Choice(["answered", "refused", "failed"]),
    help="Only queries that ended this way (refused: a site said no; failed: no totals for another reason).",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many queries to show.")
@click.option("--page-token", default="", help="Continue after a previous page (its next_page_token, with --json).")
@json_option
@operator_options
@handle_errors
def history(
    client: OperatorClient,
    dataset: str,
    asked_by: str,
    site: str,
    outcome: str | None,
    limit: int,
    page_token: str,
    as_json: bool,
) -> None:
    """Show the queries run, newest first: who asked what of which sites, the totals, and
    which sites refused and why. The coordinator keeps totals only, never a site's value."""
    page = AnalyticsClient(client).history(
        limit, page_token, dataset=dataset, asked_by=asked_by, site=site, outcome=outcome or ""
    )
    if as_json:
        echo_json(page)
        return
    rows = [
        [
            q["asked_at"][:19].replace("T", " "),
            q["asked_by"].removeprefix("operator:"),
            describe_query(q),
            q["dataset"],
            _sites(q),
            q["outcome"],
            describe_result(q),
        ]
        for q in page["queries"]
    ]
    click.echo(table(["ASKED (UTC)", "BY", "QUERY", "DATASET", "SITES", "OUTCOME", "RESULT / REASON"], rows))
    shown = len(page["queries"])
    more = f"; more with --page-token {page['next_page_token']}" if page["next_page_token"] else ""
    click.echo(f"{shown} of {page['total']} matching queries{more}")


def describe_query(q: dict) -> str:
    """``mean mean_radius where diagnosis = 1`` for one history entry."""
    text = q["statistic"] + (f" {q['column']}" if q["column"] else "")
    return text + (f" where {q['where']}" if q["where"] else "")


def describe_result(q: dict) -> str:
    """The totals of an answered query, or who refused and why."""
    result = q["result"]
    if q["outcome"] == "answered":
        if "histogram" in result:
            h = result["histogram"]
            return f"bins {h['counts']} (below {h['below']}, above {h['above']})"
        parts = [f"{k} {result[k]:.6g}" if isinstance(result[k], float) else f"{k} {result[k]}" for k in result]
        return ", ".join(parts)
    refused = [r for r in q["refusals"] if r["code"] not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")]
    if refused:
        names = ", ".join(r["site"] for r in refused[:3]) + (" ..." if len(refused) > 3 else "")
        return f"refused by {names}: {refused[0]['reason']}"
    return q["reason"] or "-"


def _sites(q: dict) -> str:
    sites = q["sites"]
    return ", ".join(sites) if len(sites) <= 3 else f"{', '.join(sites[:2])} and {len(sites) - 2} more"
