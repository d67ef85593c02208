"""``edge-agent apps``: the Flower apps this site approves to run on its data."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, iso, table

from .options import data_dir_option, json_option


def _open(data_dir: Path):
    from ..apps.store import AppStore
    from ..daemon import load_config
    from ..layout import AgentLayout

    layout = AgentLayout(data_dir.resolve())
    return layout, load_config(layout.root), AppStore.open(layout.state_db, layout.apps_dir)


@click.group()
def apps() -> None:
    """Install, approve, list and remove the Flower apps this site runs.

    Code never runs here unless this site approved that exact code: installing a local app
    and approving one the coordinator offers are the two ways to approve it.
    """


@apps.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path), metavar="DIR|FILE.fab")
@data_dir_option
@json_option
@handle_errors
def install(source: Path, data_dir: Path, as_json: bool) -> None:
    """Install a Flower app from its directory or a .fab bundle: this site approves that exact code."""
    from ..apps.install import install_bundle, limits_of, read_source

    _, config, store = _open(data_dir)
    limits = limits_of(config.apps)
    app, new = install_bundle(store, read_source(source, limits), "local", limits)
    if as_json:
        echo_json({**app.to_dict(), "new": new})
        return
    verb = "installed" if new else "already installed"
    click.echo(f"{verb} {app.ref} (sha256 {app.sha256[:12]}, {len(app.files)} files, {app.size_bytes} bytes)")
    click.echo(f"  clientapp {app.clientapp}; jobs may now run it on the datasets [training] datasets allows")


@apps.command("list")
@data_dir_option
@json_option
@handle_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List the apps installed at this site, with their hash, publisher and state."""
    _, _, store = _open(data_dir)
    installed = store.list()
    if as_json:
        echo_json([a.to_dict() for a in installed])
        return
    rows = [
        [a.name, a.version, a.to_dict()["state"], a.sha256[:12], a.publisher, len(a.files),
         ", ".join(a.dependencies), a.source, iso(a.installed_at)]
        for a in installed
    ]  # fmt: skip
    click.echo(table(["NAME", "VERSION", "STATE", "SHA256", "PUBLISHER", "FILES", "DEPENDENCIES", "SOURCE",
                      "INSTALLED"], rows))  # fmt: skip


@apps.command()
@click.argument("ref", metavar="NAME:VERSION")
@data_dir_option
@json_option
@handle_errors
def remove(ref: str, data_dir: Path, as_json: bool) -> None:
    """Withdraw this site's approval of an app and delete its files; jobs naming it are refused."""
    from ..apps.store import parse_app_ref

    name, version = parse_app_ref(ref)
    _, _, store = _open(data_dir)
    app = store.remove(name, version)  # type: ignore[arg-type]
    if as_json:
        echo_json({"removed": app.ref, "sha256": app.sha256})
        return
    click.echo(f"removed {app.ref}; a running job's worker stops at its next message")
