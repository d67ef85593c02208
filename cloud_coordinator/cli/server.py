"""``init`` and ``serve``."""

from __future__ import annotations

import dataclasses
import gc
import logging
from pathlib import Path

import click

from silolink import logs
from silolink.cli_util import echo_json, exit_without_teardown, handle_errors, stop_event_on_signals
from silolink.config import console_listen as console_listen_address
from silolink.metrics import watch_gc_pauses
from silolink.settings import SettingError

from .. import bootstrap
from ..app import Coordinator, load_config
from .options import json_option

log = logging.getLogger(__name__)
data_dir_option = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SILOLINK_COORDINATOR_DATA_DIR",
    help="The coordinator's data directory.",
)


@click.command()
@data_dir_option
@click.option(
    "--hostname", "hostnames", multiple=True, help="A name or IP agents use to reach this coordinator (repeatable)."
)
@click.option(
    "--public-address", metavar="HOST:PORT", help="The address sites dial (default: first hostname, port 7443)."
)
@json_option
@handle_errors
def init(data_dir: Path, hostnames: tuple[str, ...], public_address: str | None, as_json: bool) -> None:
    """Create the CA, server certificate, operator credential and config in DATA_DIR."""
    result = bootstrap.init(data_dir, list(hostnames), public_address)
    if as_json:
        echo_json(
            {
                "data_dir": str(Path(data_dir).resolve()),
                "ca_fingerprint": result.ca_fingerprint,
                "credentials_file": str(result.credentials_file),
                "config_file": str(result.config_file),
            }
        )
        return
    click.echo(f"coordinator initialised in {Path(data_dir).resolve()}")
    click.echo(f"  CA fingerprint:        {result.ca_fingerprint}")
    click.echo(f"  config:                {result.config_file}")
    click.echo(f"  operator credentials:  {result.credentials_file}  (copy for remote operators; keep secret)")
    click.echo(f"next: cloud-coordinator serve --data-dir {data_dir}")


def raise_open_files_limit() -> None:
    """Each connected site holds a socket: lift the soft limit on open files to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("open files limit %d: about that many sites and operators can connect at once", hard)


@click.command()
@data_dir_option
@click.option("--listen", metavar="HOST:PORT", help="mTLS listener for agents and operators (default 0.0.0.0:7443).")
@click.option(
    "--enroll-listen",
    metavar="HOST:PORT",
    help="Enrollment listener, server TLS (default: the --listen host, port + 1).",
)
@click.option("--metrics-listen", metavar="HOST:PORT", help="Prometheus metrics over HTTP; '' to disable.")
@click.option(
    "--console",
    "console_on",
    is_flag=True,
    help="Serve the web console over HTTPS on loopback, 127.0.0.1:7445 (needs the [console] extra).",
)
@click.option(
    "--console-listen",
    metavar="[HOST:]PORT",
    help="Serve the web console over HTTPS here; a port alone means loopback (e.g. 7445 or 10.0.0.5:7445).",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@handle_errors
def serve(
    data_dir: Path,
    listen: str | None,
    enroll_listen: str | None,
    metrics_listen: str | None,
    console_on: bool,
    console_listen: str | None,
    log_level: str | None,
) -> None:
    """Serve agents and operators until SIGTERM or SIGINT, then stop gracefully."""
    cfg = load_config(
        data_dir, listen=listen, enroll_listen=enroll_listen, metrics_listen=metrics_listen, log_level=log_level
    )
    if console_on or console_listen is not None:
        listen = console_listen_address(console_listen) if console_listen is not None else cfg.console.listen
        try:
            console = dataclasses.replace(cfg.console, enabled=True, listen=listen)
        except SettingError as e:
            raise click.BadParameter(str(e), param_hint="--console-listen") from None
        cfg = dataclasses.replace(cfg, console=console)
    logs.configure(cfg.log_level)
    raise_open_files_limit()
    stop = stop_event_on_signals()
    coordinator = Coordinator(data_dir, cfg).start()
    if coordinator.console_address:
        click.echo(f"console: https://{coordinator.console_address}/", err=True)
    # What start-up built (site records, stores, imported modules) lives as long as the
    # process: keep the collector from walking it again and again. With ten thousand sites
    # a full collection otherwise stalls the event loop (and every heartbeat) noticeably.
    gc.freeze()
    watch_gc_pauses(coordinator.metrics)
    stop.wait()
    log.info("shutting down")
    gc.disable()  # the process ends with the stop: collections over the streams only slow it
    coordinator.stop(process_exits=True)
    exit_without_teardown()
