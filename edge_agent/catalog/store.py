"""The site's data catalog: one SQLite table per dataset, and a table describing them.

The catalog is a file of its own (``catalog.db``), apart from the agent's state, so a site
can back it up, inspect it with any SQLite tool, or keep it on other storage. Its rows never
leave the site: what the coordinator may learn is ``summary()``, cut to the site's policy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.config import SHARE_LEVELS
from silolink.db import Database, Migrations, SqliteStore, open_database

from .csv_import import CsvScan, insert_rows, scan_csv
from .schema import Column

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


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: tuple[Column, ...]
    label: str | None
    id_column: str | None
    row_count: int
    source: str
    created_at: float

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise errors.InvalidArgument(
            f"dataset {self.name!r} has no column {name!r}; its columns are {', '.join(c.name for c in self.columns)}"
        )

    @property
    def features(self) -> list[str]:
        """The columns a model reads by default: all but the label and the id."""
        return [c.name for c in self.columns if c.name not in (self.label, self.id_column)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
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
        with self.atomic():
            dataset = self.describe(name)
            self.db[name].drop()
            self.db[META].delete(name)
        return dataset

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
        """Rows of ``columns`` in table order, ``batch_rows`` at a time, from one read snapshot."""
        dataset = self.describe(name)
        for column in columns:
            if column != "rowid":
                dataset.column(column)
        select = ", ".join(f"[{c}]" for c in columns)
        # A connection of its own: a long read must not hold the store's lock or transaction.
        reader = open_database(self._path())
        try:
            cursor = reader.conn.execute(f"SELECT {select} FROM [{name}] ORDER BY rowid")
            while batch := cursor.fetchmany(batch_rows):
                yield batch
        finally:
            reader.conn.close()

    def summary(self, share: str) -> list[dict[str, Any]]:
        """What the site's policy lets the coordinator know about each dataset."""
        level = SHARE_LEVELS.index(share)
        if level == 0:
            return []
        out = []
        for d in self.list():
            item: dict[str, Any] = {"name": d.name}
            if level >= 2:
                item["columns"] = [{"name": c.name, "type": c.type} for c in d.columns]
                item["label"] = d.label
            if level >= 3:
                item["row_count"] = d.row_count
            out.append(item)
        return out

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
    ) -> Dataset:
        row = {
            "name": name,
            "columns": json.dumps([{"name": c.name, "type": c.type} for c in columns]),
            "label": label,
            "id_column": id_column,
            "row_count": row_count,
            "source": source,
            "created_at": time.time(),
        }
        self.db[META].insert(row)
        return _dataset(row)


_PY_TYPES = {"INTEGER": int, "REAL": float, "TEXT": str}


def _dataset(row: dict[str, Any]) -> Dataset:
    return Dataset(
        name=row["name"],
        columns=tuple(Column(c["name"], c["type"]) for c in json.loads(row["columns"])),
        label=row["label"],
        id_column=row["id_column"],
        row_count=row["row_count"],
        source=row["source"],
        created_at=row["created_at"],
    )
