"""The site's data catalog: a table describing every dataset, and the rows of those it holds.

A dataset is either a table inside the catalog (CSV imports, predictions: kind ``table``)
or a source read where it lives and never copied: a Parquet/Arrow file or folder, a SQL
database, a folder of images or of DICOM files (see ``sources``). Every kind is read through
one interface, ``Catalog.source(name)``.

The catalog is a file of its own (``catalog.db``), apart from the agent's state, so a site
can back it up, inspect it with any SQLite tool, or keep it on other storage. Its rows never
leave the site: what the coordinator may learn is ``summary()``, cut to the site's policy
(sensitive columns are never described to it).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.config import SHARE_LEVELS
from silolink.db import Database, Migrations, SqliteStore, open_database

from .csv_import import CsvScan, insert_rows, scan_csv
from .schema import Column

log = logging.getLogger(__name__)
migrations = Migrations("agent.catalog")
META = "_silolink_datasets"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


@migrations()
def m001_datasets(db: Database) -> None:
    db[META].create(
        {
            "name": str,
            "columns": str,
            "label": str,
            "id_column": str,
            "row_count": int,
            "source": str,
            "created_at": float,
        },
        pk="name",
    )


@migrations()
def m002_sources(db: Database) -> None:
    """Datasets read in place: their kind, where they live, how to read them, and the
    columns the site marked sensitive. Earlier datasets are catalog tables."""
    table = db[META]
    table.add_column("kind", str, not_null_default="table")
    table.add_column("location", str, not_null_default="")
    table.add_column("options", str, not_null_default="{}")
    table.add_column("sensitive", str, not_null_default="[]")


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: tuple[Column, ...]
    label: str | None
    id_column: str | None
    row_count: int
    source: str  # for display: where the rows come from, with any password masked
    created_at: float
    # table (rows in the catalog) | parquet | sql | images | dicom
    kind: str = "table"
    # The file, folder or SQLAlchemy URL (with ${VAR} where a secret goes); empty for tables.
    location: str = ""
    # How the source is read (table or query, labels file, image shape, DICOM tags...).
    options: dict[str, Any] = field(default_factory=dict)
    # Columns never used in analytics filters or grouping, never described to the
    # coordinator, never given to an app unless the site allows it for that app.
    sensitive: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise errors.InvalidArgument(
            f"dataset {self.name!r} has no column {name!r}; its columns are {', '.join(c.name for c in self.columns)}"
        )

    @property
    def features(self) -> list[str]:
        """The columns a model reads by default: all but the label, the id and sensitive ones."""
        return [c.name for c in self.columns if c.name not in (self.label, self.id_column, *self.sensitive)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "columns": [{"name": c.name, "type": c.type, "sensitive": c.name in self.sensitive} for c in self.columns],
            "label": self.label,
            "id_column": self.id_column,
            "row_count": self.row_count,
            "source": self.source,
            "created_at": self.created_at,
        }


def check_dataset_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or name.lower().startswith(("sqlite_", "_silolink")):
        raise errors.InvalidArgument(
            f"dataset name {name!r} is not valid: use a letter, then up to 62 letters, digits or '_'"
        )
    return name


class Catalog(SqliteStore):
    migrations = migrations

    @classmethod
    def open(cls, path: Path) -> Catalog:
        return cls(open_database(path))

    def list(self) -> list[Dataset]:
        with self.lock:
            return [_dataset(r) for r in self.db[META].rows_where(order_by="name")]

    def describe(self, name: str) -> Dataset:
        with self.lock:
            rows = list(self.db[META].rows_where("name = ?", [name]))
            if not rows:
                names = [r["name"] for r in self.db[META].rows]
                known = f"; the catalog has {', '.join(sorted(names))}" if names else "; the catalog is empty"
                raise errors.NotFound(f"no dataset named {name!r}{known}")
            return _dataset(rows[0])

    def drop(self, name: str) -> Dataset:
        """Forget a dataset; a catalog table's rows go with it, a source's files or database
        are never touched."""
        with self.atomic():
            dataset = self.describe(name)
            if dataset.kind == "table":
                self.db[name].drop()
            self.db[META].delete(name)
        return dataset

    def source(self, name: str):
        """The dataset's rows through the one reading interface (``sources.Source``)."""
        from .sources import open_source

        return open_source(self.describe(name), self._path())

    def register(
        self,
        name: str,
        kind: str,
        location: str,
        options: dict[str, Any],
        columns: Sequence[Column],
        row_count: int,
        source: str,
        label: str | None = None,
        id_column: str | None = None,
        sensitive: Sequence[str] = (),
        replace: bool = False,
    ) -> Dataset:
        """Record a source read in place (already probed), in one transaction: whole or not at all."""
        check_dataset_name(name)
        with self.atomic():
            if replace:
                self._drop_if_present(name)
            else:
                self._refuse_existing(name)
            return self._record(
                name, tuple(columns), label, id_column, row_count, source, kind, location, options, sensitive
            )

    def mark_sensitive(self, name: str, columns: Sequence[str], sensitive: bool = True) -> Dataset:
        """Mark (or unmark) columns of a dataset as sensitive."""
        with self.atomic():
            dataset = self.describe(name)
            for column in columns:
                dataset.column(column)
            marked = set(dataset.sensitive)
            marked = marked | set(columns) if sensitive else marked - set(columns)
            ordered = [c.name for c in dataset.columns if c.name in marked]
            self.db[META].update(name, {"sensitive": json.dumps(ordered)})
            return self.describe(name)

    def import_csv(
        self,
        path: Path,
        name: str,
        label: str | None = None,
        id_column: str | None = None,
        replace: bool = False,
        batch_rows: int = 5000,
        progress=None,
        scan: CsvScan | None = None,
    ) -> Dataset:
        """Load a CSV as dataset ``name``: all rows or, on any error, none.

        The file is read twice: once to check every row and infer column types (so errors
        name their line before anything is written), once to insert in batches inside one
        transaction. ``progress(rows)`` is called as batches land. A caller that already
        scanned the file (to size a progress bar) passes its ``scan``.
        """
        check_dataset_name(name)
        path = Path(path)
        if not replace:
            self._refuse_existing(name)
        scan = scan or scan_csv(path, label=label, id_column=id_column)
        with self.atomic():
            if replace:
                self._drop_if_present(name)
            else:
                self._refuse_existing(name)
            self._create_table(name, scan)
            insert_rows(self.db.conn, name, scan, path, batch_rows, progress)
            return self._record(name, scan.columns, label, id_column, scan.row_count, f"csv:{path.name}")

    def create_table(
        self,
        name: str,
        columns: Sequence[Column],
        rows: Iterator[Sequence[Any]],
        source: str,
        id_column: str | None = None,
        replace: bool = False,
        progress=None,
    ) -> Dataset:
        """A new dataset from rows computed at the site (such as predictions), in one transaction."""
        check_dataset_name(name)
        with self.atomic():
            if replace:
                self._drop_if_present(name)
            else:
                self._refuse_existing(name)
            self.db[name].create({c.name: _PY_TYPES[c.type] for c in columns}, pk=id_column)
            marks = ", ".join("?" for _ in columns)
            count = 0
            for batch in rows:
                self.db.conn.executemany(f"INSERT INTO [{name}] VALUES ({marks})", batch)
                count += len(batch)
                if progress:
                    progress(len(batch))
            return self._record(name, tuple(columns), None, id_column, count, source)

    def read_batches(self, name: str, columns: Sequence[str], batch_rows: int) -> Iterator[list[tuple]]:
        """Rows of ``columns`` in source order as tuples, ``batch_rows`` at a time (``rowid``
        is the row's position, from 1). Streams through ``source(name).scan``."""
        source = self.source(name)
        for batch in source.scan(columns, batch_rows=batch_rows):
            yield list(zip(*(_python_values(batch[c]) for c in columns), strict=True))

    def summary(self, share: str) -> list[dict[str, Any]]:
        """What the site's policy lets the coordinator know about each dataset: never a
        sensitive column; counts read live from each source (a source that cannot be read
        right now is described without its count, and the site's log says why)."""
        level = SHARE_LEVELS.index(share)
        if level == 0:
            return []
        out = []
        for d in self.list():
            item: dict[str, Any] = {"name": d.name}
            if level >= 2:
                item["columns"] = [{"name": c.name, "type": c.type} for c in d.columns if c.name not in d.sensitive]
                item["label"] = d.label if d.label not in d.sensitive else None
            if level >= 3:
                count = self._live_count(d)
                if count is not None:
                    item["row_count"] = count
            out.append(item)
        return out

    def _live_count(self, dataset: Dataset) -> int | None:
        if dataset.kind == "table":
            return dataset.row_count
        from .sources import open_source

        try:
            return open_source(dataset, self._path()).count()
        except errors.SiloError as e:
            log.warning("dataset %s: row count not shared, the source cannot be read now: %s", dataset.name, e)
            return None

    def _path(self) -> Path:
        row = self.db.execute("PRAGMA database_list").fetchone()
        return Path(row[2])

    def _refuse_existing(self, name: str) -> None:
        with self.lock:
            if self.db[META].count_where("name = ? collate nocase", [name]) or self.db[name].exists():
                raise errors.AlreadyExists(f"dataset {name!r} already exists; drop it first or import with --replace")

    def _drop_if_present(self, name: str) -> None:
        if self.db[name].exists():
            self.db[name].drop()
        self.db[META].delete_where("name = ?", [name])

    def _create_table(self, name: str, scan: CsvScan) -> None:
        self.db[name].create({c.name: _PY_TYPES[c.type] for c in scan.columns}, pk=scan.id_column)

    def _record(
        self,
        name: str,
        columns: Sequence[Column],
        label: str | None,
        id_column: str | None,
        row_count: int,
        source: str,
        kind: str = "table",
        location: str = "",
        options: dict[str, Any] | None = None,
        sensitive: Sequence[str] = (),
    ) -> Dataset:
        names = [c.name for c in columns]
        for flag, column in (("--label", label), ("--id", id_column)):
            if column is not None and column not in names:
                raise errors.InvalidArgument(
                    f"{flag} {column!r} is not a column of dataset {name!r}; it has {', '.join(names)}"
                )
        unknown = [c for c in sensitive if c not in names]
        if unknown:
            raise errors.InvalidArgument(
                f"--sensitive {', '.join(unknown)}: not a column of dataset {name!r}; it has {', '.join(names)}"
            )
        row = {
            "name": name,
            "columns": json.dumps([{"name": c.name, "type": c.type} for c in columns]),
            "label": label,
            "id_column": id_column,
            "row_count": row_count,
            "source": source,
            "created_at": time.time(),
            "kind": kind,
            "location": location,
            "options": json.dumps(options or {}),
            "sensitive": json.dumps([n for n in names if n in set(sensitive)]),
        }
        self.db[META].insert(row)
        return _dataset(row)


_PY_TYPES = {"INTEGER": int, "REAL": float, "TEXT": str}


def _python_values(values) -> list:
    """A batch column as Python values, None where a number is missing (NaN)."""
    out = values.tolist()
    if values.dtype.kind == "f":
        return [None if v != v else v for v in out]
    return out


def _dataset(row: dict[str, Any]) -> Dataset:
    return Dataset(
        name=row["name"],
        columns=tuple(Column(c["name"], c["type"]) for c in json.loads(row["columns"])),
        label=row["label"],
        id_column=row["id_column"],
        row_count=row["row_count"],
        source=row["source"],
        created_at=row["created_at"],
        kind=row.get("kind") or "table",
        location=row.get("location") or "",
        options=json.loads(row.get("options") or "{}"),
        sensitive=tuple(json.loads(row.get("sensitive") or "[]")),
    )
