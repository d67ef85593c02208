"""``backup`` and ``restore`` of a coordinator's data directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors

from .. import backup as backup_mod
from .options import json_option
from .server import data_dir_option


def _plain(result: object) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}  # type: ignore[call-overload]


@click.command()
@data_dir_option
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup file to write (a new .tar.gz, outside the data directory; it holds the CA key).",
)
@json_option
@handle_errors
def backup(data_dir: Path, output: Path, as_json: bool) -> None:
    """Snapshot DATA_DIR into one file, safely while the coordinator runs."""
    result = backup_mod.backup(data_dir, output)
    if as_json:
        echo_json(_plain(result))
        return
    click.echo(f"backed up {Path(data_dir).resolve()} to {result.output}")
    click.echo(f"  files:      {result.files} ({result.bytes} bytes), databases: {', '.join(result.databases)}")
    if result.audit_entries is not None:
        click.echo(f"  audit log:  {result.audit_entries} entries, head {result.audit_head}")
    click.echo(f"  sha256:     {result.sha256}")
    click.echo("it holds the CA and audit keys: encrypt it and keep it off this host")


@click.command()
@click.option(
    "--input",
    "archive",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file written by `cloud-coordinator backup`.",
)
@data_dir_option
@json_option
@handle_errors
def restore(archive: Path, data_dir: Path, as_json: bool) -> None:
    """Restore a backup into DATA_DIR (new or empty), checking every file and the audit chain."""
    result = backup_mod.restore(archive, data_dir)
    if as_json:
        echo_json(_plain(result))
        return
    click.echo(f"restored {archive} ({result.written_by}, {result.created_at}) into {result.data_dir}")
    click.echo(f"  files:      {result.files} ({result.bytes} bytes), every SHA-256 matches the manifest")
    if result.audit_entries is not None:
        click.echo(f"  audit log:  {result.audit_entries} entries verify, head {result.audit_head}")
    click.echo(f"next: cloud-coordinator serve --data-dir {result.data_dir}")
