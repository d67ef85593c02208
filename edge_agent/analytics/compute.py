"""A query's statistic over one catalog table, computed at the site.

The SQL is the site's own: the table and column names come from its catalog and are
quoted, the filter's literals are bound parameters. The connection is read-only
(``query_only``) and an authorizer allows nothing but reading this one table and the few
functions used here, so even a mistake in the compiler could not write or read elsewhere.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.analytics import where as where_mod
from silolink.analytics.query import SCALE, STATISTIC_NAMES, to_fixed
from silolink.gen.analytics.v1 import analytics_pb2 as pb

from ..catalog.store import Dataset

_FUNCTIONS = {"count", "min", "max"}


@dataclass(frozen=True)
class LocalResult:
    """The site's own answer: integers in the vector layout of ``silolink.analytics.query``."""

    values: list[int]
    # The rows the answer is computed over (matching the filter, with a value in the column).
    cohort: int
    # For histograms, the counts of the vector (below, bins, above); empty otherwise.
    bins: list[int]


def _authorizer(table: str):
    def check(action: int, arg1, arg2, db_name, trigger) -> int:
        if action == sqlite3.SQLITE_SELECT:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1 == table:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _FUNCTIONS:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return check


def _values(conn: sqlite3.Connection, sql: str, params: list) -> Iterator:
    for (value,) in conn.execute(sql, params):
        yield value


def compute(catalog_db: Path, dataset: Dataset, query: pb.Query, show_columns: bool) -> LocalResult:
    """Run ``query`` (already checked for shape) over ``dataset``; InvalidArgument for columns
    the dataset lacks or whose type does not fit. ``show_columns``: whether error messages may
    list the dataset's columns (the site's share policy decides).
    """
    types = {c.name: c.type for c in dataset.columns}

    def column_type(name: str) -> str:
        if name not in types:
            listing = f"; its columns are {', '.join(types)}" if show_columns else ""
            raise errors.InvalidArgument(f"dataset {dataset.name!r} has no column {name!r}{listing}")
        return types[name]

    condition, params = where_mod.compile_sql(where_mod.parse(query.where), column_type)
    statistic = STATISTIC_NAMES[query.statistic]
    table = where_mod.quote_identifier(dataset.name)
    column = ""
    if statistic != "count":
        if column_type(query.column) not in ("INTEGER", "REAL"):
            raise errors.InvalidArgument(f"{statistic} needs a numeric column; {query.column!r} holds text")
        column = where_mod.quote_identifier(query.column)

    conn = sqlite3.connect(catalog_db, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorizer(dataset.name))
        if statistic == "count":
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {condition}", params).fetchone()
            return LocalResult([count], count, [])
        present = f"{condition} AND {column} IS NOT NULL"
        if statistic == "histogram":
            return _histogram(_values(conn, f"SELECT {column} FROM {table} WHERE {present}", params), query)
        expression, bound = column, []
        if query.HasField("bounds"):
            expression, bound = f"MIN(MAX({column}, ?), ?)", [query.bounds.min, query.bounds.max]
        values = list(_values(conn, f"SELECT {expression} FROM {table} WHERE {present}", bound + params))
    finally:
        conn.close()
    if all(isinstance(v, int) for v in values):
        fixed = sum(values) * SCALE  # integers: exact
    else:
        total = math.fsum(values)  # correctly rounded, whatever the order
        if not math.isfinite(total):
            raise errors.InvalidArgument(f"the sum of {query.column!r} at this site is not finite")
        fixed = to_fixed(total)
    if statistic == "sum":
        return LocalResult([fixed], len(values), [])
    return LocalResult([len(values), fixed], len(values), [])


def _histogram(values: Iterator, query: pb.Query) -> LocalResult:
    edges = list(query.bin_edges)
    counts = [0] * (len(edges) + 1)  # below, bins..., above
    cohort = 0
    last = len(edges) - 1
    for value in values:
        cohort += 1
        at = bisect.bisect_right(edges, value)
        if at > last and value == edges[last]:
            at = last  # the last bin is closed on the right
        counts[at] += 1
    return LocalResult(list(counts), cohort, list(counts))
