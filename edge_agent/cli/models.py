"""``edge-agent models``: the site's local model store."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, iso, table

from ..layout import AgentLayout
from ..models.store import ModelStore, parse_ref
from .options import data_dir_option, json_option


def open_store(data_dir: Path) -> ModelStore:
    layout = AgentLayout(data_dir.resolve())
    return ModelStore.open(layout.state_db, layout.model_blobs)


@click.group()
def models() -> None:
    """Install, list, activate and remove ONNX models at this site."""


@models.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The model's name.")
@click.option("--version", "version", required=True, help="The version being installed.")
@click.option("--no-activate", is_flag=True, help="Install without making it the active version.")
@data_dir_option
@json_option
@handle_errors
def install(file: Path, name: str, version: str, no_activate: bool, data_dir: Path, as_json: bool) -> None:
    """Check an ONNX file loads, and install it (active unless --no-activate)."""
    record = open_store(data_dir).install(file, name, version, activate=not no_activate)
    if as_json:
        echo_json(record.to_dict())
        return
    state = "active" if record.active else "installed, not active"
    click.echo(f"installed {record.ref} (sha256 {record.sha256[:12]}, {record.size_bytes} bytes): {state}")
    for spec in record.signature.inputs:
        click.echo(f"  input  {spec.describe()}")
    for spec in record.signature.outputs:
        click.echo(f"  output {spec.describe()}")


@models.command("list")
@data_dir_option
@json_option
@handle_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List installed models and versions."""
    records = open_store(data_dir).list()
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    rows = [
        [r.name, r.version, "yes" if r.active else "", r.sha256[:12], r.size_bytes, iso(r.installed_at)]
        for r in records
    ]
    click.echo(table(["NAME", "VERSION", "ACTIVE", "SHA256", "BYTES", "INSTALLED"], rows))


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@data_dir_option
@json_option
@handle_errors
def activate(ref: str, data_dir: Path, as_json: bool) -> None:
    """Make an installed version the one requests get by default."""
    name, version = _exact(ref)
    record = open_store(data_dir).activate(name, version)
    if as_json:
        echo_json(record.to_dict())
        return
    click.echo(f"{record.ref} is now active")


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@data_dir_option
@json_option
@handle_errors
def remove(ref: str, data_dir: Path, as_json: bool) -> None:
    """Remove an installed version (the newest other version becomes active)."""
    name, version = _exact(ref)
    record = open_store(data_dir).remove(name, version)
    if as_json:
        echo_json({"removed": record.ref})
        return
    click.echo(f"removed {record.ref}")


def _exact(ref: str) -> tuple[str, str]:
    name, version = parse_ref(ref)
    if version is None:
        raise click.UsageError(f"name a version: {ref}:VERSION")
    return name, version


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@data_dir_option
@json_option
@handle_errors
def approve(ref: str, data_dir: Path, as_json: bool) -> None:
    """Approve a rolled-out version that waits for local approval; the agent activates it."""
    from ..registry.orders import OrderStore

    name, version = _exact(ref)
    order = OrderStore.open(AgentLayout(data_dir.resolve()).state_db).approve(name, version)
    if as_json:
        echo_json(order.to_dict())
        return
    click.echo(f"approved {order.ref}; the running agent activates it within a second (or when it next starts)")


@models.command()
@data_dir_option
@json_option
@handle_errors
def orders(data_dir: Path, as_json: bool) -> None:
    """List the model orders received from the coordinator and where each stands."""
    from ..registry.orders import OrderStore

    found = OrderStore.open(AgentLayout(data_dir.resolve()).state_db).list()
    if as_json:
        echo_json([o.to_dict() for o in found])
        return
    rows = [[o.ref, o.state, o.rollout_id, iso(o.updated_at), o.reason] for o in found]
    click.echo(table(["MODEL", "STATE", "ROLLOUT", "UPDATED", "REASON"], rows))
