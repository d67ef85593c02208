"""A query's statistic over one dataset, computed at the site through the catalog's reading
interface, whatever the dataset's kind.

The filter is parsed here and handed to the source as a tree: a catalog table or SQL
database gets SQL of the site's own making with literals as bound parameters (never text
from the coordinator), a Parquet file gets a pyarrow expression. Counts and sums are pushed
down to the source where it can compute them (SQL aggregates); histograms stream the
column's values in batches, so memory stays bounded. Columns the site marked sensitive are
never used to filter or to group rows (a histogram groups by value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from silolink import errors
from silolink.analytics import where as where_mod
from silolink.analytics.query import SCALE, STATISTIC_NAMES, to_fixed
from silolink.gen.analytics.v1 import analytics_pb2 as pb

from ..catalog.sources import Source
from ..catalog.sources.base import AGGREGATE_BATCH_ROWS


@dataclass(frozen=True)
class LocalResult:
    """The site's own answer: integers in the vector layout of ``silolink.analytics.query``."""

    values: list[int]
    # The rows the answer is computed over (matching the filter, with a value in the column).
    cohort: int
    # For histograms, the counts of the vector (below, bins, above); empty otherwise.
    bins: list[int]


def compute(source: Source, query: pb.Query, show_columns: bool) -> LocalResult:
    """Run ``query`` (already checked for shape) over ``source``; InvalidArgument for columns
    the dataset lacks or whose type does not fit, PermissionDenied for sensitive columns.
    ``show_columns``: whether error messages may list the dataset's columns (the site's
    share policy decides; sensitive columns are never listed).
    """
    dataset = source.dataset
    types = {c.name: c.type for c in dataset.columns}
    sensitive = set(dataset.sensitive)

    def column_type(name: str) -> str:
        if name not in types:
            visible = [c for c in types if c not in sensitive]
            listing = f"; its columns are {', '.join(visible)}" if show_columns else ""
            raise errors.InvalidArgument(f"dataset {dataset.name!r} has no column {name!r}{listing}")
        return types[name]

    def refuse_sensitive(name: str, use: str) -> None:
        if name in sensitive:
            raise errors.PermissionDenied(
                f"column {name!r} of dataset {dataset.name!r} is marked sensitive at this site: it cannot {use}"
            )

    node = where_mod.parse(query.where)
    for name in where_mod.columns(node):
        column_type(name)
        refuse_sensitive(name, "filter a query")
    if node is not None:  # literal types checked before anything is read
        where_mod.fold(node, column_type, lambda n: None, lambda op, items: None)
    statistic = STATISTIC_NAMES[query.statistic]
    if statistic == "count":
        count = source.count(node)
        return LocalResult([count], count, [])
    if column_type(query.column) not in ("INTEGER", "REAL"):
        raise errors.InvalidArgument(f"{statistic} needs a numeric column; {query.column!r} holds text")
    if statistic == "histogram":
        refuse_sensitive(query.column, "group rows into a histogram")
        return _histogram(source, query, node)
    bounds = (query.bounds.min, query.bounds.max) if query.HasField("bounds") else None
    rows, total = source.summarize(query.column, node, bounds)
    fixed = total * SCALE if isinstance(total, int) else to_fixed(total)  # integers: exact
    if statistic == "sum":
        return LocalResult([fixed], rows, [])
    return LocalResult([rows, fixed], rows, [])


def _histogram(source: Source, query: pb.Query, node) -> LocalResult:
    edges = np.array(query.bin_edges, dtype=np.float64)
    counts = np.zeros(len(edges) + 1, dtype=np.int64)  # below, bins..., above
    for batch in source.scan([query.column], node, present=[query.column], batch_rows=AGGREGATE_BATCH_ROWS):
        values = batch[query.column].astype(np.float64, copy=False)
        at = np.searchsorted(edges, values, side="right")
        at[(at == len(edges)) & (values == edges[-1])] = len(edges) - 1  # the last bin is closed on the right
        counts += np.bincount(at, minlength=len(edges) + 1)
    total = int(counts.sum())
    return LocalResult([int(c) for c in counts], total, [int(c) for c in counts])
