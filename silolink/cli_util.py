"""Helpers shared by the three command-line tools: errors, JSON, tables, durations, signals."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import click

from silolink import errors

# Exit codes by failure kind, so scripts can tell "fix your input" from "try again later".
EXIT_CODES = {
    errors.Code.INVALID_ARGUMENT: 2,
    errors.Code.NOT_FOUND: 3,
    errors.Code.ALREADY_EXISTS: 4,
    errors.Code.PERMISSION_DENIED: 5,
    errors.Code.UNAUTHENTICATED: 5,
    errors.Code.UNAVAILABLE: 6,
    errors.Code.DEADLINE_EXCEEDED: 6,
}


def report_error(err: BaseException) -> NoReturn:
    """Print ``err`` as one line on stderr (a JSON object under ``--json``) and exit non-zero.

    Domain errors keep their message; a file the user named that cannot be read says which
    and why; anything else is an unexpected failure, whose traceback SILOLINK_DEBUG=1 shows.
    """
    if isinstance(err, errors.SiloError):
        code, message, exit_code = err.code.value, err.message, EXIT_CODES.get(err.code, 1)
        if err.site_detail:  # this CLI runs at the site: its admin may see the details
            message = f"{message} [{err.site_detail}]"
    elif isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        code, message, exit_code = "OS_ERROR", f"{where}{err.strerror or err}", 1
    else:
        if os.environ.get("SILOLINK_DEBUG"):
            raise err
        code = "INTERNAL"
        message = f"unexpected {type(err).__name__}: {err} (set SILOLINK_DEBUG=1 to see where)"
        exit_code = 1
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_JSON_ERRORS):
        click.echo(json.dumps({"error": {"code": code, "message": message}}, sort_keys=True), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(exit_code)


class CommandGroup(click.Group):
    """The top-level group of a command-line tool: every command under it, however deep,
    fails in one line (``report_error``) instead of a Python traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.Abort) as e:
            if not ctx.meta.get(_JSON_ERRORS):
                raise  # click's own message: usage, or "Aborted!" at a prompt
            usage = isinstance(e, click.ClickException)
            error = (
                {"code": "USAGE", "message": e.format_message()} if usage else {"code": "ABORTED", "message": "aborted"}
            )
            click.echo(json.dumps({"error": error}, sort_keys=True), err=True)
            sys.exit(e.exit_code if usage else 1)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - reported in one line, see report_error
            report_error(e)  # ctx.meta, shared by the failed command's context chain, knows --json


def handle_errors(fn: Callable) -> Callable:
    """Report a SiloError in one line (see ``report_error``) instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.SiloError as e:
            report_error(e)

    return wrapper


_JSON_ERRORS = "silolink.json_errors"


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[_JSON_ERRORS] = True  # meta is shared by the whole context chain
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    is_eager=True,  # known before any other parameter can fail
    callback=_remember_json,
    help="Print one JSON object instead of text (errors too, on stderr).",
)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[["-" if v in (None, "") else str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|tib|kb|mb|gb|tb)?$", re.IGNORECASE)
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "tb": 10**12}  # fmt: skip


def parse_size(text: str) -> int:
    """``8GiB``, ``512MiB``, ``4096`` (bytes) into bytes; InvalidArgument otherwise."""
    match = _SIZE.match(text.strip())
    if not match:
        raise errors.InvalidArgument(f"{text!r} is not a size such as 8GiB or 512MiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration_s(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` into seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 24h or 7d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return int(value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def parse_tags(values: Iterable[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"tag {item!r} must be key=value")
        tags[key] = value
    return tags


def exit_without_teardown(code: int = 0) -> NoReturn:
    """End a daemon's process once it has stopped (every file closed, every child ended),
    skipping the interpreter's teardown: its garbage collections walk the whole heap, ten
    seconds for a coordinator that held ten thousand streams, and they delay a restart
    while saving nothing. Logs and standard streams are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to lose
            pass
    os._exit(code)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread)."""
    event = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event
