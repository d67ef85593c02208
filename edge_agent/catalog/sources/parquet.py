"""Parquet and Arrow files or folders, read in place with pyarrow's dataset scanner.

Filters become pyarrow expressions (pushed into the scan, so row groups whose statistics
rule them out are never read); batches stream with a small read-ahead, so memory stays
flat whatever the file's size. pyarrow is imported here only, never at agent start-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from silolink import errors
from silolink.analytics import where as where_mod

from ..schema import Column
from .base import DEFAULT_BATCH_ROWS, OPERATORS, Batch, Source

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
# Read-ahead kept small: a couple of batches in flight bounds memory to a few batches.
BATCH_READAHEAD = 2
FRAGMENT_READAHEAD = 1


def file_format(path: Path) -> str | None:
    """ "parquet", "ipc" (Arrow) or None, from a file's suffix or a folder's files."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            found = file_format(child) if child.is_file() else None
            if found:
                return found
        return None
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in ARROW_SUFFIXES:
        return "ipc"
    return None


def _column_type(arrow_type) -> str:
    import pyarrow.types as t

    if t.is_integer(arrow_type) or t.is_boolean(arrow_type):
        return "INTEGER"
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return "REAL"
    return "TEXT"


def _open(name: str, location: str, fmt: str):
    import pyarrow as pa
    import pyarrow.dataset as ds

    path = Path(location)
    if not path.exists():
        raise errors.NotFound(
            f"dataset {name!r}: {location} does not exist; restore the file or register the dataset again "
            "with its new path (edge-agent data add --replace)"
        )
    suffixes = PARQUET_SUFFIXES if fmt == "parquet" else ARROW_SUFFIXES
    try:
        if path.is_dir():
            # In a folder, only files of the format count (a README or _SUCCESS marker is not data).
            files = [str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes]
            if not files:
                raise errors.NotFound(
                    f"dataset {name!r}: {location} holds no {' or '.join(suffixes)} files; "
                    "point --source at the folder that holds them"
                )
            return ds.dataset(files, format=fmt)
        return ds.dataset(str(path), format=fmt)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise _unreadable(name, location, e) from None


def _unreadable(name: str, location: str, e: Exception) -> errors.SiloError:
    what = str(e).splitlines()[0][:300]
    return errors.FailedPrecondition(
        f"dataset {name!r}: {location} is not a readable Parquet/Arrow file ({what}); "
        "check the file is complete (not still being written) and re-export it"
    )


def probe(name: str, location: str) -> tuple[tuple[Column, ...], int, dict[str, Any]]:
    """Columns, row count and options of a Parquet/Arrow source, reading its footers only."""
    import pyarrow as pa

    fmt = file_format(Path(location))
    dataset = _open(name, location, fmt or "parquet")
    try:
        columns = tuple(Column(f.name, _column_type(f.type)) for f in dataset.schema)
        count = dataset.count_rows()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise _unreadable(name, location, e) from None
    return columns, count, {"format": fmt or "parquet"}


class ParquetSource(Source):
    kind = "parquet"

    def _dataset(self):
        return _open(self.name, self.dataset.location, self.dataset.options.get("format", "parquet"))

    def _expression(self, where: where_mod.Node | None, present: Sequence[str]):
        import pyarrow.compute as pc

        def leaf(n: where_mod.Comparison):
            # Arrow compares an empty value as null, which a filter drops: no row without a
            # value matches, as in SQL, without an is_valid() that would slow the scan.
            return OPERATORS[n.op](pc.field(n.column), pc.scalar(n.value))

        def join(op: str, items: list):
            expression = items[0]
            for item in items[1:]:
                expression = (expression & item) if op == "and" else (expression | item)
            return expression

        expression = where_mod.fold(where, self.column_type, leaf, join) if where is not None else None
        for name in present:
            valid = pc.field(name).is_valid()
            expression = valid if expression is None else expression & valid
        return expression

    def _record_batches(self, columns, where, present, batch_rows):
        """The rows as Arrow record batches, one Parquet row group at a time.

        pyarrow's scanner over a whole file does not hold back when its consumer is slower
        than the disk (turning strings into Python objects is): it read a 6.5M-row file
        whole into memory whatever ``batch_readahead`` said (146 vs 6 MB of Arrow memory,
        bench.sources). A scanner per row group bounds what is read ahead to that group."""
        import pyarrow.dataset as ds

        dataset = self._dataset()
        expression = self._expression(where, present)
        parquet = self.dataset.options.get("format", "parquet") == "parquet"
        # pre_buffer would read a whole file's column chunks ahead, too.
        options = {"fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False)} if parquet else {}
        for fragment in dataset.get_fragments(filter=expression):
            pieces = fragment.split_by_row_group(filter=expression, schema=dataset.schema) if parquet else [fragment]
            for piece in pieces:
                yield from piece.to_batches(
                    schema=dataset.schema,
                    columns=list(columns),
                    filter=expression,
                    batch_size=batch_rows,
                    batch_readahead=BATCH_READAHEAD,
                    fragment_readahead=FRAGMENT_READAHEAD,
                    **options,
                )

    def count(self, where: where_mod.Node | None = None) -> int:
        import pyarrow as pa

        try:
            return self._dataset().count_rows(filter=self._expression(where, ()))
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise _unreadable(self.name, self.dataset.location, e) from None

    def scan(
        self,
        columns: Sequence[str],
        where: where_mod.Node | None = None,
        present: Sequence[str] = (),
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[Batch]:
        import pyarrow as pa

        self.check_columns([*columns, *present])
        wanted = [c for c in columns if c != "rowid"]
        kinds = {c: self.column_type(c) for c in wanted}
        position = 0
        try:
            for record in self._record_batches(wanted, where, present, batch_rows):
                if record.num_rows == 0:
                    continue
                batch = {c: _array(record.column(c), kinds[c]) for c in wanted}
                if "rowid" in columns:
                    batch["rowid"] = np.arange(position + 1, position + record.num_rows + 1, dtype=np.int64)
                position += record.num_rows
                yield batch
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise _unreadable(self.name, self.dataset.location, e) from None
        except KeyError as e:
            raise self.fail(
                f"column {e} is no longer in {self.dataset.location}",
                "register the dataset again (edge-agent data add --replace)",
            ) from None


def _array(column, kind: str) -> np.ndarray:
    import pyarrow as pa

    if kind == "TEXT":
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            column = column.cast(pa.string())
        return np.array(column.to_pylist(), dtype=object)
    if kind == "INTEGER" and column.null_count == 0:
        return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
