"""Options shared by agent commands."""

from __future__ import annotations

from pathlib import Path

import click

data_dir_option = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SILOLINK_AGENT_DATA_DIR",
    help="The agent's data directory (e.g. /var/lib/silolink).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
