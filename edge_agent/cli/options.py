"""Options shared by agent commands."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import json_option  # noqa: F401 - the one --json of every command

data_dir_option = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SILOLINK_AGENT_DATA_DIR",
    help="The agent's data directory (e.g. /var/lib/silolink).",
)
