"""``train start | status | logs | list | stop``: federated training jobs running Flower apps."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from silolink import errors
from silolink.cli_util import echo_json, handle_errors, table

from ..operator_client import OperatorClient
from ..training.runconfig import value_from_text
from .options import json_option, operator_options

FINAL = ("completed", "failed", "stopped")
EXIT_JOB_FAILED = 1


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


class RunConfigItem(click.ParamType):
    """``KEY=VALUE``, the value read as TOML (``5``, ``0.1``, ``true``, ``"text"``) as ``flwr run``
    reads ``--run-config``; a value that is not TOML is taken as text."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        key = key.strip()
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE (e.g. num-server-rounds=5)", param, ctx)
        try:
            return key, value_from_text(text)
        except errors.InvalidArgument as e:
            self.fail(f"{key}: {e.message}", param, ctx)


@click.group()
def train() -> None:
    """Run federated training across sites: your Flower app's ServerApp here, its ClientApp at each site."""


@train.command()
@click.option("--app", "app_ref", required=True, metavar="NAME[:VERSION]",
              help="The published Flower app to run (`apps list`), e.g. tabular or my-app:1.0.0.")  # fmt: skip
@click.option("--dataset", required=True, help="The catalog dataset each site trains on.")
@click.option("--sites", "sites", multiple=True, required=True, help="kind=hospital, site=NAME or TAG=VALUE.")
@click.option(
    "--run-config",
    "run_config",
    type=RunConfigItem(),
    multiple=True,
    help="Override a key of the app's [tool.flwr.app.config], e.g. num-server-rounds=5 (repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0, max=30 * 24 * 3600.0),
    default=None,
    help="Seconds the ServerApp may run before the job fails (default: the coordinator's).",
)
@click.option("--rounds", type=click.IntRange(1, 10_000), help="Sets num-server-rounds (the built-in tabular app).")
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox", "fedadam"]),
              help="Sets strategy (the built-in tabular app).")  # fmt: skip
@click.option("--min-sites", type=click.IntRange(1), help="Sets min-sites: fewest usable sites per round.")
@click.option("--round-timeout", type=click.FloatRange(min=0.001), help="Sets round-timeout: seconds a round waits.")
@click.option("--local-epochs", type=click.IntRange(1), help="Sets local-epochs.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), help="Sets lr, the sites' learning rate.")
@click.option("--proximal-mu", type=float, help="Sets proximal-mu (FedProx).")
@click.option("--server-lr", type=float, help="Sets server-lr (FedAdam).")
@click.option("--dp-noise", type=float, help="Sets dp-noise, the DP noise multiplier (0: off).")
@click.option("--dp-clip", type=float, help="Sets dp-clip, the DP clipping norm of each update.")
@click.option("--model-name", default="", help="Registry name of a published result (default DATASET-APP).")
@click.option("--secagg", is_flag=True, help="Sets secagg (the built-in tabular-secagg app, 3+ sites).")
@click.option(
    "--hidden", type=HiddenLayers(), default=None, help="Sets hidden: the tabular model's layers, e.g. 64,32."
)
@click.option("--watch", is_flag=True, help="Follow the job until it ends; exit non-zero if it fails.")
@json_option
@operator_options
@handle_errors
def start(client: OperatorClient, app_ref, dataset, sites, run_config, timeout, rounds, strategy, min_sites,
          round_timeout, local_epochs, lr, proximal_mu, server_lr, dp_noise, dp_clip, model_name, secagg, hidden,
          watch, as_json) -> None:  # fmt: skip
    """Start a federated training job: the app's ServerApp runs here, unchanged, against the sites."""
    name, _, version = app_ref.partition(":")
    flags = dict(
        rounds=rounds,
        strategy=strategy,
        min_sites=min_sites,
        round_timeout_s=round_timeout,
        local_epochs=local_epochs,
        learning_rate=lr,
        proximal_mu=proximal_mu,
        server_learning_rate=server_lr,
        dp_noise_multiplier=dp_noise,
        dp_clipping_norm=dp_clip,
        secure_aggregation=secagg or None,
        hidden_units=hidden or None,
        timeout_s=timeout,
    )
    job = client.start_training(
        app=name,
        app_version=version,
        dataset=dataset,
        sites=list(sites),
        model_name=model_name,
        run_config=dict(run_config),
        **{k: v for k, v in flags.items() if v is not None},  # only what was given: the app's defaults stand
    )
    if watch:
        job = follow(client, job["job"], quiet=as_json)
    if as_json:
        echo_json(job)
    elif not watch:
        click.echo(f"job {job['job']} started: app {job['spec']['app']}:{job['app_version']}; "
                   f"follow it with: cloud-coordinator train status {job['job']} --watch")  # fmt: skip
    if watch:
        _final(job, as_json)


@train.command()
@click.argument("job_id", metavar="JOB")
@click.option("--watch", is_flag=True, help="Follow the job until it ends; exit non-zero if it fails.")
@json_option
@operator_options
@handle_errors
def status(client: OperatorClient, job_id: str, watch: bool, as_json: bool) -> None:
    """Show a job: its state, each round as the strategy ran it, and its models."""
    job = follow(client, job_id, quiet=as_json) if watch else client.get_job(job_id)
    if as_json:
        echo_json(job)
    else:
        show(job)
    if watch:
        _final(job, as_json=True)


@train.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing output as the ServerApp writes it, until the job ends."
)
@operator_options
@handle_errors
def logs(client: OperatorClient, job_id: str, follow: bool) -> None:
    """Print the output of the job's ServerApp (stdout, stderr and logging), like `flwr log`."""
    offset = 0
    while True:
        data, offset, complete = client.read_job_logs(job_id, offset)
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        if complete or not follow:
            return
        if not data:
            time.sleep(0.5)


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
    rows = [[j["job"], j["state"], f"{j['spec']['app']}:{j['app_version']}", j["spec"]["dataset"], j["model"],
             j["created_at"]] for j in jobs]  # fmt: skip
    click.echo(table(["JOB", "STATE", "APP", "DATASET", "MODEL", "STARTED"], rows))


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


def planned_rounds(job: dict) -> int | None:
    rounds = job["spec"].get("rounds") or job.get("run_config", {}).get("num-server-rounds")
    return rounds if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0 else None


def follow(client: OperatorClient, job_id: str, quiet: bool = False, interval_s: float = 0.5) -> dict:
    """Poll the job until it ends, printing each round as it is recorded (with a bar when the
    number of rounds is known)."""
    job = client.get_job(job_id)
    shown = 0
    with click.progressbar(length=planned_rounds(job) or 0, label=f"job {job_id}", file=sys.stderr,
                           hidden=quiet or not planned_rounds(job)) as bar:  # fmt: skip
        while True:
            done = [r for r in job["rounds"] if _complete(r)] if job["state"] == "running" else job["rounds"]
            for record in done[shown:]:
                if not quiet:
                    click.echo("\n" + round_line(record), err=True)
                bar.update(1)
            shown = max(shown, len(done))
            if job["state"] in FINAL:
                return job
            time.sleep(interval_s)
            job = client.get_job(job_id)


def _complete(record: dict) -> bool:
    """A running job's round is shown once its evaluation (or the next round) is recorded."""
    return bool(record["eval_metrics"] or record["server_metrics"])


def _final(job: dict, as_json: bool) -> None:
    """After --watch: the final state and reason on stderr, exit non-zero unless completed."""
    if job["state"] != "completed":
        reason = f": {job['error']}" if job["error"] else ""
        click.echo(f"job {job['job']} {job['state']}{reason}", err=True)
        sys.exit(EXIT_JOB_FAILED)
    if not as_json:
        click.echo(f"job {job['job']} completed" + (f"; model {job['model']}" if job["model"] else ""), err=True)


def round_line(record: dict) -> str:
    metrics = {**record["train_metrics"], **record["eval_metrics"],
               **{f"server_{k}": v for k, v in record.get("server_metrics", {}).items()}}  # fmt: skip
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k != "num-examples")
    out = f"round {record['round']}: {len(record['participants'])} sites ({', '.join(record['participants'])}); {shown}"
    for e in record["excluded"]:
        kind = f" ({e['message_type']})" if e.get("message_type") else ""
        out += f"\n  excluded {e['site']}{kind}: {e['reason']}"
    return out


def show(job: dict) -> None:
    spec = job["spec"]
    layers = f", hidden layers {','.join(map(str, spec['hidden_units']))}" if spec.get("hidden_units") else ""
    strategy = f", {spec['strategy']}" if spec.get("strategy") else ""
    planned = planned_rounds(job)
    version = f":{job['app_version']}" if job.get("app_version") else ""
    click.echo(f"job {job['job']}: {job['state']}  app {spec['app']}{version} on {spec['dataset']}{strategy}{layers}, "
               f"{len(job['rounds'])}/{planned or '?'} rounds, sites {', '.join(spec['sites'])}")  # fmt: skip
    if job.get("run_config"):
        click.echo("run_config: " + ", ".join(f"{k}={v!r}" for k, v in sorted(job["run_config"].items())))
    if job.get("resumed"):
        click.echo(f"resumed {job['resumed']} time(s) after coordinator restarts, last after round "
                   f"{job.get('resumed_from_round', 0)}")  # fmt: skip
    for record in job["rounds"]:
        click.echo(round_line(record))
    if job["error"]:
        click.echo(f"error: {job['error']}")
    if job["privacy"]:
        click.echo(f"privacy spent: epsilon {job['privacy']['epsilon']:.3f} at delta {job['privacy']['delta']:g}")
    for model in job.get("published_models") or ([job["model"]] if job["model"] else []):
        click.echo(f"model: {model}")
