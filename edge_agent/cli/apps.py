"""``edge-agent apps``: the Flower apps this site approves to run on its data."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, table

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
@click.option("--local", is_flag=True, help="Only the apps installed here; do not ask the coordinator what it offers.")
@data_dir_option
@json_option
@handle_errors
def list_(local: bool, data_dir: Path, as_json: bool) -> None:
    """List the apps the coordinator offers this site and those installed here.

    STATE is offered (not approved here), installed (approved, files in place) or approved
    (approved, but its files are missing: install it again).
    """
    from silolink import errors

    layout, config, store = _open(data_dir)
    offers = []
    if not local:
        try:
            from ..apps.client import AppsClient

            with AppsClient(layout, config) as client:
                offers = client.offers()[0]
        except errors.SiloError as e:
            click.echo(f"note: the coordinator's offers are not shown: {e.message}", err=True)
    entries = merge_listing(store.list(), offers)
    if as_json:
        echo_json(entries)
        return
    rows = [
        [e["name"], e["version"], e["state"], e["sha256"][:12], e["publisher"], len(e["files"]),
         ", ".join(e["dependencies"]), e["source"]]
        for e in entries
    ]  # fmt: skip
    click.echo(table(["NAME", "VERSION", "STATE", "SHA256", "PUBLISHER", "FILES", "DEPENDENCIES", "SOURCE"], rows))


def merge_listing(installed, offers) -> list[dict]:
    """One entry per (name, version, sha256): offered, installed, or both."""
    entries: dict[tuple, dict] = {}
    for app in installed:
        entry = app.to_dict()
        entries[(app.name, app.version, app.sha256)] = {**entry, "offered": False}
    for offer in offers:
        key = (offer.name, offer.version, offer.sha256)
        if key in entries:
            entries[key]["offered"] = True
        else:
            entries[key] = {**offer.to_dict(), "state": "offered", "source": "coordinator", "offered": True}
    return [entries[k] for k in sorted(entries)]


@apps.command()
@click.argument("ref", metavar="NAME:VERSION")
@data_dir_option
@json_option
@handle_errors
def approve(ref: str, data_dir: Path, as_json: bool) -> None:
    """Approve an app the coordinator offers: download its signed bundle, verify, install.

    The manifest's signature is checked against the CA this site enrolled with, the bundle
    against the manifest's SHA-256, and every declared dependency must already be installed
    here (the agent installs none). Jobs may then run exactly this bundle.
    """
    from ..apps.approve import approve as approve_app
    from ..apps.client import AppsClient
    from ..apps.install import limits_of
    from ..apps.store import parse_app_ref

    name, version = parse_app_ref(ref)
    layout, config, store = _open(data_dir)
    with AppsClient(layout, config) as client:
        app, new = approve_app(store, client, layout.ca_cert.read_bytes(), name, version, limits_of(config.apps))  # type: ignore[arg-type]
    if as_json:
        echo_json({**app.to_dict(), "new": new})
        return
    verb = "approved and installed" if new else "already installed"
    click.echo(f"{verb} {app.ref} (sha256 {app.sha256[:12]}, {len(app.files)} files, publisher {app.publisher})")


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
