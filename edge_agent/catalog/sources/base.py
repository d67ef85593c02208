"""The one reading interface every dataset kind implements, and the pieces they share.

A ``Source`` reads a dataset where it lives, in batches: each batch is a dict of column
name to numpy array, all of one length. Memory stays bounded by the batch size whatever
the dataset's size, since nothing is read ahead of the consumer beyond a batch or two.

Arrays by column type:
- INTEGER: int64, or float64 with NaN where a batch has empty values;
- REAL: float64 with NaN for empty values;
- TEXT: object array of str, None for empty values;
- IMAGE: the pixels of each row stacked, shape (rows, *image shape), in the images' dtype;
- ``rowid`` (asked for by name): the row's position in the source, from 1.

Filters are the analytics grammar's trees (``silolink.analytics.where``): each source
compiles them to its own form (bound SQL parameters, pyarrow expressions, numpy masks), so
no text from the coordinator ever reaches a database as SQL. ``present`` names columns a
row must have a value in.
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from silolink import errors
from silolink.analytics import where as where_mod

from ..store import Dataset

Batch = dict[str, np.ndarray]
DEFAULT_BATCH_ROWS = 65536
# Aggregates read one or two numeric columns: larger batches (2 MB a column) cost fewer
# round trips through the scanner and still bound memory.
AGGREGATE_BATCH_ROWS = 1 << 18
# Python's comparison operators for each operator of the filter grammar.
OPERATORS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Source(abc.ABC):
    """A dataset's rows, read in place. Subclasses implement ``count`` and ``scan``; they may
    override ``summarize`` to push the aggregate down to where the data lives."""

    kind: ClassVar[str] = ""

    def __init__(self, dataset: Dataset, catalog_path: Path) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.catalog_path = catalog_path
        self._types = {c.name: c.type for c in dataset.columns}

    # -- the interface ----------------------------------------------------------------
    @abc.abstractmethod
    def count(self, where: where_mod.Node | None = None) -> int:
        """Rows matching ``where`` (all rows without one)."""

    @abc.abstractmethod
    def scan(
        self,
        columns: Sequence[str],
        where: where_mod.Node | None = None,
        present: Sequence[str] = (),
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[Batch]:
        """Batches of ``columns`` for the rows matching ``where`` with values in ``present``."""

    def summarize(
        self, column: str, where: where_mod.Node | None = None, bounds: tuple[float, float] | None = None
    ) -> tuple[int, int | float]:
        """(rows with a value in ``column`` matching ``where``, their sum), each value first
        clipped to ``bounds``. Integer sums are exact; float sums are float64 sums per batch
        added exactly across batches (relative error far below 1e-12)."""
        rows, partials, exact = 0, [], 0
        for batch in self.scan([column], where, present=[column], batch_rows=AGGREGATE_BATCH_ROWS):
            values = batch[column]
            rows += len(values)
            if bounds is not None:
                values = np.clip(values.astype(np.float64, copy=False), bounds[0], bounds[1])
            if values.dtype.kind in "iu":
                exact += exact_int_sum(values)
            else:
                partials.append(float(np.sum(values, dtype=np.float64)))
        if not partials:
            return rows, exact
        total = math.fsum([*partials, float(exact)])
        if not math.isfinite(total):
            raise errors.InvalidArgument(f"the sum of {column!r} at this site is not finite")
        return rows, total

    # -- shared checks ------------------------------------------------------------------
    def column_type(self, name: str) -> str:
        if name == "rowid":
            return "INTEGER"
        if name not in self._types:
            raise errors.InvalidArgument(f"dataset {self.name!r} has no column {name!r}")
        return self._types[name]

    def check_columns(self, columns: Sequence[str]) -> None:
        for name in columns:
            self.column_type(name)

    def fail(
        self, what: str, fix: str, kind: type[errors.SiloError] = errors.FailedPrecondition, site_detail: str = ""
    ) -> errors.SiloError:
        """An error naming the dataset, what went wrong and what the site admin should do;
        ``site_detail`` (hosts, accounts, a driver's words) stays at the site."""
        return kind(f"dataset {self.name!r}: {what}; {fix}", site_detail=site_detail)


def exact_int_sum(values: np.ndarray) -> int:
    """The exact sum of an integer array: numpy's int64 sum when it cannot overflow."""
    if not len(values):
        return 0
    largest = max(abs(int(values.max())), abs(int(values.min())))
    if largest * len(values) < 2**62:
        return int(values.sum(dtype=np.int64))
    return sum(int(v) for v in values)


def column_array(values: list, kind: str) -> np.ndarray:
    """A column's Python values (None for empty) as the interface's numpy array."""
    if kind == "INTEGER":
        if any(v is None for v in values):
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return np.array([int(v) for v in values], dtype=np.int64).reshape(len(values))
    if kind == "REAL":
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64).reshape(len(values))
    array = np.empty(len(values), dtype=object)
    array[:] = [None if v is None else str(v) for v in values]
    return array


def where_mask(node: where_mod.Node | None, batch: Batch, column_type, rows: int) -> np.ndarray:
    """The rows of an in-memory batch that match ``node`` (for sources that cannot push a
    filter down: labels and DICOM metadata read from files)."""
    if node is None:
        return np.ones(rows, dtype=bool)

    def leaf(n: where_mod.Comparison) -> np.ndarray:
        values = batch[n.column]
        if values.dtype == object:
            have = np.array([v is not None for v in values], dtype=bool)
            matched = np.array([v is not None and OPERATORS[n.op](v, n.value) for v in values], dtype=bool)
            return matched & have
        with np.errstate(invalid="ignore"):
            return OPERATORS[n.op](values, n.value) & ~np.isnan(values.astype(np.float64, copy=False))

    def join(op: str, items: list[np.ndarray]) -> np.ndarray:
        return np.logical_and.reduce(items) if op == "and" else np.logical_or.reduce(items)

    return where_mod.fold(node, column_type, leaf, join)


def present_mask(batch: Batch, present: Sequence[str], rows: int) -> np.ndarray:
    mask = np.ones(rows, dtype=bool)
    for name in present:
        values = batch[name]
        if values.dtype == object:
            mask &= np.array([v is not None for v in values], dtype=bool)
        elif values.dtype.kind == "f":
            mask &= ~np.isnan(values)
    return mask
