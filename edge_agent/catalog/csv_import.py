"""CSV files into catalog tables: check everything first, then insert in batches.

Errors name the file and line (as a text editor counts them) so a site admin can fix the
file; nothing is written until the whole file has been checked.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from silolink import errors

from .schema import Column

# SQLite's default SQLITE_MAX_COLUMN, which the table the file becomes must fit.
MAX_COLUMNS = 2000


@dataclass(frozen=True)
class CsvScan:
    columns: tuple[Column, ...]
    row_count: int
    id_column: str | None


def _decoded_lines(path: Path, f) -> Iterator[str]:
    """Lines decoded one at a time, so an encoding error names its own line."""
    for number, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise errors.InvalidArgument(
                f"{path.name}: line {number}: not valid UTF-8 ({e.reason} at column {e.start + 1}); "
                "save the file as UTF-8"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line  # spreadsheets' byte-order mark


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank record, header included."""
    try:
        with path.open("rb") as f:
            reader = csv.reader(_decoded_lines(path, f), strict=True)
            try:
                for fields in reader:
                    if fields:
                        yield reader.line_num, fields
            except csv.Error as e:
                raise errors.InvalidArgument(f"{path.name}: line {reader.line_num}: {e}") from None
    except FileNotFoundError:
        raise errors.NotFound(f"{path} does not exist") from None
    except IsADirectoryError:
        raise errors.InvalidArgument(f"{path} is a directory, not a CSV file") from None


def _kind(value: str) -> int:
    """0 empty, 1 integer, 2 real, 3 text."""
    if value == "":
        return 0
    try:
        int(value)
        return 1
    except ValueError:
        pass
    try:
        float(value)
        return 2
    except ValueError:
        return 3


_TYPE_NAMES = {0: "TEXT", 1: "INTEGER", 2: "REAL", 3: "TEXT"}


def scan_csv(path: Path, label: str | None = None, id_column: str | None = None) -> CsvScan:
    """Check every row of the file and infer each column's type."""
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise errors.InvalidArgument(f"{path.name} is empty; the first line must name the columns")
    _, header = first
    header = [h.strip() for h in header]
    if len(header) > MAX_COLUMNS:
        raise errors.InvalidArgument(
            f"{path.name}: line 1: {len(header):,} columns; a dataset holds at most {MAX_COLUMNS:,} (SQLite's limit)"
        )
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            raise errors.InvalidArgument(f"{path.name}: line 1: column {i + 1} has no name")
        if any(ch in name for ch in '[]"'):
            raise errors.InvalidArgument(f'{path.name}: line 1: column name {name!r} contains [, ] or "; rename it')
        if name.lower() in seen:
            raise errors.InvalidArgument(f"{path.name}: line 1: column name {name!r} appears twice")
        seen[name.lower()] = i
    for flag, column in (("--label", label), ("--id", id_column)):
        if column is not None and column not in header:
            raise errors.InvalidArgument(
                f"{flag} {column!r} is not a column of {path.name}; it has {', '.join(header)}"
            )
    width = len(header)
    kinds = [0] * width
    id_index = header.index(id_column) if id_column else None
    ids: set[str] = set()
    count = 0
    for line, fields in rows:
        if len(fields) != width:
            raise errors.InvalidArgument(
                f"{path.name}: line {line}: {len(fields)} fields, but the header names {width} columns"
            )
        for i, value in enumerate(fields):
            if kinds[i] < 3:
                kind = _kind(value)
                if kind > kinds[i]:
                    kinds[i] = kind
        if id_index is not None:
            key = fields[id_index]
            if key == "":
                raise errors.InvalidArgument(f"{path.name}: line {line}: the id column {id_column!r} is empty")
            if key in ids:
                raise errors.InvalidArgument(f"{path.name}: line {line}: id {id_column!r} value repeats an earlier row")
            ids.add(key)
        count += 1
    if count == 0:
        raise errors.InvalidArgument(f"{path.name} has a header but no rows")
    columns = tuple(Column(name, _TYPE_NAMES[k]) for name, k in zip(header, kinds, strict=True))
    return CsvScan(columns, count, id_column)


def _converter(column: Column) -> Callable[[str], object]:
    if column.type == "INTEGER":
        return lambda v: int(v) if v != "" else None
    if column.type == "REAL":
        return lambda v: float(v) if v != "" else None
    return lambda v: v if v != "" else None


def insert_rows(
    conn: sqlite3.Connection,
    table: str,
    scan: CsvScan,
    path: Path,
    batch_rows: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Insert the (already checked) file's rows into ``table``; the caller holds the transaction."""
    converters = [_converter(c) for c in scan.columns]
    sql = f"INSERT INTO [{table}] VALUES ({', '.join('?' for _ in scan.columns)})"
    rows = _rows(path)
    next(rows)  # the header
    batch: list[list[object]] = []
    for _, fields in rows:
        batch.append([convert(v) for convert, v in zip(converters, fields, strict=True)])
        if len(batch) >= batch_rows:
            conn.executemany(sql, batch)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        conn.executemany(sql, batch)
        if progress:
            progress(len(batch))
