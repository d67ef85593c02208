"""Shared benchmark plumbing: arguments, medians, the table and the final JSON line."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; finishes in under a minute")
    return parser.parse_args(argv)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def report(title: str, rows: list[tuple[str, str, str]], figures: dict[str, Any]) -> None:
    """Print a table of (measure, value, note) rows, then the JSON line of every figure."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{title}\n" + "=" * len(title))
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value.rjust(vwidth)}  {note}")
    print(json.dumps(figures, sort_keys=True))


def wait_for_file(path: Path, process: subprocess.Popen, timeout_s: float = 60.0, log: Path | None = None) -> None:
    """Wait until ``process`` writes ``path`` (its ready signal); fail if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            where = f"; see {log}" if log else ""
            raise RuntimeError(f"{process.args[1:3]} did not become ready (exit {process.poll()}){where}")
        time.sleep(0.005)
