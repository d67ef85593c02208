"""``apps push | list | show``: Flower apps, published for sites to approve and jobs to run."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, table

from ..apps.client import AppsClient
from ..apps.registry import parse_ref
from ..operator_client import OperatorClient
from .models import _size
from .options import json_option, operator_options


@click.group()
def apps() -> None:
    """Publish Flower apps (signed bundles) that sites can approve and jobs can run."""


@apps.command()
@click.argument("source", metavar="DIR|FILE.fab", type=click.Path(exists=True, path_type=Path))
@json_option
@operator_options
@handle_errors
def push(client: OperatorClient, source: Path, as_json: bool) -> None:
    """Publish a Flower app: a directory in Flower's layout (built with Flower's builder) or a .fab."""
    app = AppsClient(client).push(source)
    if as_json:
        echo_json(app)
        return
    state = "published" if app["created"] else "already published (same bundle)"
    click.echo(f"{state}: {app['name']}:{app['version']} (sha256 {app['sha256']}, {_size(app['size_bytes'])}), "
               f"manifest signed")  # fmt: skip
    click.echo(f"  serverapp {app['serverapp']}, clientapp {app['clientapp']}")
    if app["config"]:
        click.echo("  run_config " + ", ".join(f"{k}={v!r}" for k, v in app["config"].items()))


@apps.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """List every published app version."""
    found = AppsClient(client).list()
    if as_json:
        echo_json(found)
        return
    rows = [[a["name"], a["version"], a["sha256"][:12], _size(a["size_bytes"]), a["publisher"], a["creator"],
             a["created_at"], "built-in" if a["builtin"] else ""] for a in found]  # fmt: skip
    click.echo(table(["NAME", "VERSION", "SHA256", "SIZE", "PUBLISHER", "CREATOR", "PUBLISHED", ""], rows))


@apps.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@json_option
@operator_options
@handle_errors
def show(client: OperatorClient, ref: str, as_json: bool) -> None:
    """Show an app's versions, or one version: what it declares, its files and signed manifest."""
    name, version = parse_ref(ref)
    found = AppsClient(client).show(name, version)
    if as_json:
        echo_json(found[0] if version else found)
        return
    for app in found:
        click.echo(f"{app['name']}:{app['version']}  sha256 {app['sha256']}  {_size(app['size_bytes'])}  "
                   f"publisher {app['publisher']}  by {app['creator']} at {app['created_at']}")  # fmt: skip
        click.echo(f"  serverapp {app['serverapp']}  clientapp {app['clientapp']}")
        click.echo("  dependencies: " + (", ".join(app["dependencies"]) or "none"))
        for key, value in app["config"].items():
            click.echo(f"  config {key} = {value!r}")
        for f in app["files"]:
            click.echo(f"  file {f['path']}  {f['sha256'][:12]}  {f['size_bytes']} B")
