"""Options shared by operator commands: where the coordinator and the credential are."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from silolink.cli_util import json_option  # noqa: F401 - the one --json of every command

from ..operator_client import OperatorClient, OperatorCredentials


def operator_options(fn: Callable) -> Callable:
    """Add --data-dir / --credentials / --coordinator and pass an OperatorClient as ``client``."""

    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SILOLINK_COORDINATOR_DATA_DIR",
        help="The coordinator's data directory (on its host).",
    )
    @click.option(
        "--credentials",
        "credentials_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SILOLINK_OPERATOR_CREDENTIALS",
        help="An operator credentials file copied from the coordinator (operator/credentials.json).",
    )
    @click.option("--coordinator", metavar="HOST:PORT", help="Override the coordinator's address.")
    @functools.wraps(fn)
    def wrapper(data_dir: Path | None, credentials_file: Path | None, coordinator: str | None, **kwargs: Any) -> Any:
        creds = OperatorCredentials.resolve(data_dir, credentials_file, coordinator)
        with OperatorClient(creds) as client:
            return fn(client=client, **kwargs)

    return wrapper
