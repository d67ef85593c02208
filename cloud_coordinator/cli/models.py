"""``models push | list | show | deprecate | rollout | status | rollback``: the registry."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, table

from ..operator_client import OperatorClient
from ..registry.client import RegistryClient
from ..registry.models import parse_ref
from .options import json_option, operator_options


@click.group()
def models() -> None:
    """Publish signed models and roll them out to sites."""


def _exact(ref: str) -> tuple[str, str]:
    name, version = parse_ref(ref)
    if version is None:
        raise click.UsageError(f"name a version: {ref}:VERSION")
    return name, version


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


@models.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The model's name.")
@click.option("--version", "version", help="The version (default: the next integer).")
@click.option("--description", default="", help="A free-form description.")
@json_option
@operator_options
@handle_errors
def push(client: OperatorClient, file: Path, name: str, version: str | None, description: str, as_json: bool) -> None:
    """Check an ONNX file loads, store it by SHA-256 and sign its manifest."""
    model = RegistryClient(client).push(file, name, version, description)
    if as_json:
        echo_json(model)
        return
    click.echo(f"registered {model['name']}:{model['version']} (sha256 {model['sha256'][:12]}, "
               f"{_size(model['size_bytes'])}), manifest signed")  # fmt: skip
    for spec in model["inputs"]:
        click.echo(f"  input  {spec['name']}: {spec['dtype']}{spec['shape']}")
    for spec in model["outputs"]:
        click.echo(f"  output {spec['name']}: {spec['dtype']}{spec['shape']}")


@models.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """List every registered model version."""
    found = RegistryClient(client).list()
    if as_json:
        echo_json(found)
        return
    rows = [
        [m["name"], m["version"], m["sha256"][:12], _size(m["size_bytes"]), m["creator"], m["created_at"],
         "deprecated" if m["deprecated"] else ""]
        for m in found
    ]  # fmt: skip
    click.echo(table(["NAME", "VERSION", "SHA256", "SIZE", "CREATOR", "CREATED", ""], rows))


@models.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@json_option
@operator_options
@handle_errors
def show(client: OperatorClient, ref: str, as_json: bool) -> None:
    """Show a model's versions, or one version with its signed manifest."""
    name, version = parse_ref(ref)
    found = RegistryClient(client).show(name, version)
    if as_json:
        echo_json(found if version is None else found[0])
        return
    for m in found:
        click.echo(f"{m['name']}:{m['version']}{'  (deprecated)' if m['deprecated'] else ''}")
        click.echo(f"  sha256       {m['sha256']}")
        click.echo(f"  size         {m['size_bytes']} bytes")
        click.echo(f"  created      {m['created_at']} by {m['creator']}")
        if m["source_job"]:
            click.echo(f"  source job   {m['source_job']}")
        if m["description"]:
            click.echo(f"  description  {m['description']}")
        for spec in m["inputs"]:
            click.echo(f"  input        {spec['name']}: {spec['dtype']}{spec['shape']}")
        for spec in m["outputs"]:
            click.echo(f"  output       {spec['name']}: {spec['dtype']}{spec['shape']}")
        if version is not None:
            click.echo(f"  manifest     {m['manifest']}")
            click.echo(f"  signature    {m['manifest_signature']}")


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@json_option
@operator_options
@handle_errors
def deprecate(client: OperatorClient, ref: str, as_json: bool) -> None:
    """Mark a version deprecated: it can no longer be rolled out."""
    model = RegistryClient(client).deprecate(*_exact(ref))
    if as_json:
        echo_json(model)
    else:
        click.echo(f"{model['name']}:{model['version']} is deprecated")


def _echo_rollout(rollout: dict, as_json: bool) -> None:
    if as_json:
        echo_json(rollout)
        return
    click.echo(f"{rollout['kind']} {rollout['rollout_id']} of {rollout['name']}:{rollout['version']} "
               f"to {len(rollout['sites'])} site(s)")  # fmt: skip
    _echo_sites(rollout["sites"])
    click.echo(f"follow it with: cloud-coordinator models status {rollout['name']}:{rollout['version']} --watch")


# Beyond this many sites, a rollout is shown as counts by state plus the failed sites.
FULL_TABLE_SITES = 50
# States after which a site's order needs nothing more from the coordinator.
SETTLED_STATES = {"active", "failed", "superseded", "awaiting_approval", "held"}


def _summary(sites: list[dict]) -> str:
    counts = collections.Counter(s["state"] for s in sites)
    return f"{len(sites)} site(s): " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))


def _echo_sites(sites: list[dict]) -> None:
    def progress(s: dict) -> str:
        if s["state"] == "downloading" and s["size_bytes"]:
            return f"{100 * s['bytes_received'] / s['size_bytes']:.0f}%"
        return ""

    shown = sites
    if len(sites) > FULL_TABLE_SITES:
        click.echo(_summary(sites))
        shown = [s for s in sites if s["state"] == "failed"]
        if not shown:
            return
    rows = [[s["site"], s["state"], progress(s), s["updated_at"], s["reason"]] for s in shown]
    click.echo(table(["SITE", "STATE", "PROGRESS", "UPDATED", "REASON"], rows))


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option(
    "--to",
    "targets",
    multiple=True,
    metavar="SELECTOR",
    help="Sites to send it to: kind=hospital, site=NAME (or NAME), a tag such as region=north, terms "
    "joined by commas must all match, or all. Repeat to add more sites.",
)
@click.option("--canary", type=click.IntRange(min=1), help="Send it to only this many sites (first by name) for now.")
@click.option("--study", default="", help="The study the rollout belongs to; its sites must have accepted it.")
@click.option(
    "--continue",
    "resume",
    is_flag=True,
    help="Send a canary rollout's held sites their orders (once the canary sites are active).",
)
@json_option
@operator_options
@handle_errors
def rollout(
    client: OperatorClient,
    ref: str,
    targets: tuple[str, ...],
    canary: int | None,
    study: str,
    resume: bool,
    as_json: bool,
) -> None:
    """Order sites to install and activate a version; each reports its progress."""
    name, version = _exact(ref)
    registry = RegistryClient(client)
    if resume:
        if targets or canary:
            raise click.UsageError("--continue takes no --to or --canary: it continues the rollout as started")
        _echo_rollout(registry.continue_rollout(name, version), as_json)
        return
    if not targets:
        raise click.UsageError("name the sites with --to kind=hospital, --to region=north or --to SITE")
    _echo_rollout(registry.rollout(name, version, list(targets), canary or 0, study), as_json)


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option(
    "--watch",
    is_flag=True,
    help="Follow the rollout: print a line of counts by state as it moves, until every site is settled "
    "(active, failed, superseded, awaiting approval or held).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between looks with --watch.",
)
@json_option
@operator_options
@handle_errors
def status(client: OperatorClient, ref: str, watch: bool, interval: float, as_json: bool) -> None:
    """Show each site's state for a version: pending, downloading, verified, active, failed..."""
    registry = RegistryClient(client)
    sites = registry.status(*_exact(ref))
    if watch:
        started, last = time.monotonic(), ""
        while True:
            line = _summary(sites)
            if line != last and not as_json:
                click.echo(f"{time.monotonic() - started:6.1f} s  {line}")
                last = line
            if all(s["state"] in SETTLED_STATES for s in sites):
                break
            time.sleep(interval)
            sites = registry.status(*_exact(ref))
    if as_json:
        echo_json(sites)
    else:
        _echo_sites(sites)


@models.command()
@click.argument("name")
@click.option("--to", "to_version", required=True, metavar="VERSION", help="The earlier version to return to.")
@json_option
@operator_options
@handle_errors
def rollback(client: OperatorClient, name: str, to_version: str, as_json: bool) -> None:
    """Return every site that was sent model NAME to an earlier version."""
    _echo_rollout(RegistryClient(client).rollback(name, to_version), as_json)
