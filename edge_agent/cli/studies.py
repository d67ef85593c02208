"""``edge-agent studies list | accept | leave``: which studies this site takes part in, and on what terms."""

from __future__ import annotations

import time
from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, parse_size, table
from silolink.gen.studies.v1 import studies_pb2 as pb

from ..client import LocalClient
from ..studies.client import LocalStudiesClient
from .options import data_dir_option, json_option


def _csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


@click.group()
def studies() -> None:
    """The studies this site takes part in, and what it allows each."""


@studies.command("list")
@data_dir_option
@json_option
@handle_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List studies that invited this site, which it accepted or left, and its budgets."""
    with LocalClient.for_data_dir(data_dir) as local:
        entries, problem = LocalStudiesClient(local).list()
    if as_json:
        echo_json({"studies": entries, "coordinator_error": problem or None})
        return
    rows = []
    for e in entries:
        a = e["allowance"]
        allows = "as agent.toml says" if a is None and e["state"] == "accepted" else ""
        if a:
            allows = "; ".join(
                part for part in (
                    f"datasets {','.join(a['datasets'])}" if a["datasets"] else "",
                    f"apps {','.join(a['apps'])}" if a["apps"] else "",
                    f"queries {','.join(a['query_kinds'])}" if a["query_kinds"] else "",
                    "models" if a["models"] else "",
                    "exchange" if a["exchange"] else "",
                ) if part
            )  # fmt: skip
        budget = "; ".join(
            f"{b['dataset']} eps {b['epsilon_spent']:.3g}"
            + (f"/{b['epsilon_budget']:.3g}" if b["epsilon_budget"] else "")
            for b in e["budgets"]
        )
        rows.append([e["study"], e["state"], allows, budget])
    click.echo(table(["STUDY", "STATE", "ALLOWS", "PRIVACY SPENT"], rows))
    if problem:
        click.echo(f"(the coordinator could not be asked for invitations: {problem})", err=True)


@studies.command()
@click.argument("name")
@click.option("--datasets", multiple=True, help="Datasets the study's work may read (comma-separated or repeated).")
@click.option("--apps", multiple=True, help="Flower apps the study's training jobs may run.")
@click.option("--queries", multiple=True, help="Query kinds allowed: count, sum, mean, histogram.")
@click.option(
    "--min-cohort", type=int, default=0, help="Fewest matching rows a query answer may use (>= the site's own)."
)
@click.option("--epsilon-budget", type=float, default=0.0, help="Privacy budget per dataset (epsilon); 0 keeps none.")
@click.option("--delta-budget", type=float, default=1e-5, show_default=True, help="Privacy budget per dataset (delta).")
@click.option(
    "--query-epsilon", type=float, default=0.0, help="Epsilon each noised answer spends (0: [analytics] epsilon)."
)
@click.option("--share-budget", is_flag=True, help="Let the coordinator see what remains of the budgets.")
@click.option("--models", is_flag=True, help="Let the study's rollouts install models here.")
@click.option("--exchange", is_flag=True, help="Let the study's agreements carry envelopes to and from this site.")
@click.option("--max-jobs", type=int, default=1, show_default=True, help="The study's jobs running here at once.")
@click.option("--cpu", type=float, default=1.0, show_default=True, help="CPUs the study's jobs may hold together.")
@click.option("--memory", default="4GiB", show_default=True, help="Memory the study's jobs may hold together.")
@click.option("--gpus", type=int, default=0, show_default=True, help="GPUs the study's jobs may hold together.")
@click.option(
    "--window", "windows", multiple=True, help="When its jobs may run, local time, e.g. 22:00-06:00 (repeat)."
)
@click.option("--cpu-hours", type=float, default=0.0, help="CPU-hours the study's jobs may use per day (0: no limit).")
@data_dir_option
@json_option
@handle_errors
def accept(
    name: str, datasets: tuple[str, ...], apps: tuple[str, ...], queries: tuple[str, ...], min_cohort: int,
    epsilon_budget: float, delta_budget: float, query_epsilon: float, share_budget: bool, models: bool,
    exchange: bool, max_jobs: int, cpu: float, memory: str, gpus: int, windows: tuple[str, ...], cpu_hours: float,
    data_dir: Path, as_json: bool,
) -> None:  # fmt: skip
    """Accept study NAME (it must have invited this site), saying what this site allows it.

    Accepting again re-declares the allowance. `edge-agent studies accept default` with no
    options rejoins the default study on agent.toml's terms.
    """
    bare = not (datasets or apps or queries or models or exchange or epsilon_budget)
    allowance = None
    if not (name == "default" and bare):
        allowance = pb.Allowance(
            datasets=_csv(datasets), apps=_csv(apps), query_kinds=_csv(queries), min_cohort=min_cohort,
            epsilon_budget=epsilon_budget, delta_budget=delta_budget, query_epsilon=query_epsilon,
            share_budget=share_budget, models=models, exchange=exchange,
            share=pb.ComputeShare(
                max_jobs=max_jobs, cpu=cpu, memory_bytes=parse_size(memory), gpus=gpus, windows=list(windows),
                utc_offset_s=time.localtime().tm_gmtoff, cpu_hours_per_day=cpu_hours,
            ),
        )  # fmt: skip
    with LocalClient.for_data_dir(data_dir) as local:
        study = LocalStudiesClient(local).accept(name, allowance)
    if as_json:
        echo_json(study)
        return
    click.echo(f"accepted study {study['study']}")


@studies.command()
@click.argument("name")
@data_dir_option
@json_option
@handle_errors
def leave(name: str, data_dir: Path, as_json: bool) -> None:
    """Leave study NAME: this site refuses its work from now on."""
    with LocalClient.for_data_dir(data_dir) as local:
        study = LocalStudiesClient(local).leave(name)
    if as_json:
        echo_json(study)
        return
    click.echo(f"left study {study['study']}; its jobs, queries, rollouts and envelopes are refused here")
