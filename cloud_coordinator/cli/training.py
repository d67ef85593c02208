"""``train start | status | list | stop``: federated training jobs."""

from __future__ import annotations

import sys
import time

import click

from silolink.cli_util import echo_json, handle_errors, table

from ..operator_client import OperatorClient
from .options import json_option, operator_options

FINAL = ("completed", "failed", "stopped")


class HiddenLayers(click.ParamType):
    """``64,32``: units per hidden layer, input side first."""

    name = "UNITS[,UNITS...]"

    def convert(self, value, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of layer sizes, e.g. 64,32", param, ctx)


@click.group()
def train() -> None:
    """Run federated training across sites (Flower strategies; rows stay at the sites)."""


@train.command()
@click.option("--app", required=True, help="The Flower app the sites run (e.g. tabular); each site must allow it.")
@click.option("--dataset", required=True, help="The catalog dataset each site trains on.")
@click.option("--sites", "sites", multiple=True, required=True, help="kind=hospital, site=NAME or TAG=VALUE.")
@click.option("--rounds", type=click.IntRange(1, 10_000), required=True, help="Rounds to run.")
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox", "fedadam"]), default="fedavg", show_default=True,
              help="Flower strategy.")  # fmt: skip
@click.option(
    "--min-sites", type=click.IntRange(1), default=2, show_default=True, help="Fewest usable sites per round."
)
@click.option("--round-timeout", type=float, default=60.0, show_default=True, help="Seconds a round waits for sites.")
@click.option("--local-epochs", type=click.IntRange(1), default=1, show_default=True, help="Local epochs per round.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Sites' learning rate.")
@click.option("--proximal-mu", type=float, default=0.1, show_default=True, help="FedProx proximal weight.")
@click.option("--server-lr", type=float, default=0.1, show_default=True, help="FedAdam server learning rate.")
@click.option("--dp-noise", type=float, default=0.0, show_default=True, help="DP noise multiplier (0: off).")
@click.option("--dp-clip", type=float, default=0.0, show_default=True, help="DP clipping norm of each update.")
@click.option("--model-name", default="", help="Registry name of the result (default DATASET-APP).")
@click.option("--secagg", is_flag=True, help="Secure aggregation (Flower SecAgg+): app tabular-secagg, 3+ sites.")
@click.option(
    "--hidden", type=HiddenLayers(), default="", help="Hidden ReLU layers of the tabular model, e.g. 32 or 64,32."
)
@click.option("--watch", is_flag=True, help="Follow the job until it ends.")
@json_option
@operator_options
@handle_errors
def start(client: OperatorClient, app, dataset, sites, rounds, strategy, min_sites, round_timeout, local_epochs, lr,
          proximal_mu, server_lr, dp_noise, dp_clip, model_name, secagg, hidden, watch, as_json) -> None:  # fmt: skip
    """Start a federated training job."""
    job = client.start_training(
        app=app,
        dataset=dataset,
        sites=list(sites),
        rounds=rounds,
        strategy=strategy,
        min_sites=min_sites,
        round_timeout_s=round_timeout,
        local_epochs=local_epochs,
        learning_rate=lr,
        proximal_mu=proximal_mu if strategy == "fedprox" else 0.0,
        server_learning_rate=server_lr,
        dp_noise_multiplier=dp_noise,
        dp_clipping_norm=dp_clip,
        model_name=model_name,
        secure_aggregation=secagg,
        hidden_units=hidden,
    )
    if watch:
        job = follow(client, job["job"], quiet=as_json)
    if as_json:
        echo_json(job)
        return
    if not watch:
        click.echo(f"job {job['job']} started; follow it with: cloud-coordinator train status {job['job']} --watch")


@train.command()
@click.argument("job_id", metavar="JOB")
@click.option("--watch", is_flag=True, help="Follow the job until it ends, with a progress bar.")
@json_option
@operator_options
@handle_errors
def status(client: OperatorClient, job_id: str, watch: bool, as_json: bool) -> None:
    """Show a job's state, per-round metrics and its registered model."""
    job = follow(client, job_id, quiet=as_json) if watch else client.get_job(job_id)
    if as_json:
        echo_json(job)
        return
    show(job)


@train.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """List training jobs, newest first."""
    jobs = client.list_jobs()
    if as_json:
        echo_json(jobs)
        return
    rows = [[j["job"], j["state"], j["spec"]["app"], j["spec"]["dataset"], j["spec"]["rounds"], j["model"],
             j["created_at"]] for j in jobs]  # fmt: skip
    click.echo(table(["JOB", "STATE", "APP", "DATASET", "ROUNDS", "MODEL", "STARTED"], rows))


@train.command()
@click.argument("job_id", metavar="JOB")
@json_option
@operator_options
@handle_errors
def stop(client: OperatorClient, job_id: str, as_json: bool) -> None:
    """Stop a running job."""
    job = client.stop_job(job_id)
    if as_json:
        echo_json(job)
        return
    click.echo(f"job {job['job']} {job['state']}")


def follow(client: OperatorClient, job_id: str, quiet: bool = False, interval_s: float = 0.5) -> dict:
    """Poll the job until it ends, drawing a bar of rounds and each round's line."""
    job = client.get_job(job_id)
    shown = 0
    with click.progressbar(length=job["spec"]["rounds"], label=f"job {job_id}", file=sys.stderr, hidden=quiet) as bar:
        while True:
            for record in job["rounds"][shown:]:
                if not quiet:
                    click.echo("\n" + round_line(record), err=True)
                bar.update(1)
            shown = len(job["rounds"])
            if job["state"] in FINAL:
                return job
            time.sleep(interval_s)
            job = client.get_job(job_id)


def round_line(record: dict) -> str:
    metrics = {**record["train_metrics"], **record["eval_metrics"]}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k != "num-examples")
    out = f"round {record['round']}: {len(record['participants'])} sites ({', '.join(record['participants'])}); {shown}"
    for e in record["excluded"]:
        out += f"\n  excluded {e['site']}: {e['reason']}"
    return out


def show(job: dict) -> None:
    spec = job["spec"]
    layers = f", hidden layers {','.join(map(str, spec['hidden_units']))}" if spec.get("hidden_units") else ""
    click.echo(f"job {job['job']}: {job['state']}  app {spec['app']} on {spec['dataset']}, {spec['strategy']}{layers}, "
               f"{len(job['rounds'])}/{spec['rounds']} rounds, sites {', '.join(spec['sites'])}")  # fmt: skip
    for record in job["rounds"]:
        click.echo(round_line(record))
    if job["error"]:
        click.echo(f"error: {job['error']}")
    if job["privacy"]:
        click.echo(f"privacy spent: epsilon {job['privacy']['epsilon']:.3f} at delta {job['privacy']['delta']:g}")
    if job["model"]:
        click.echo(f"model: {job['model']}")
