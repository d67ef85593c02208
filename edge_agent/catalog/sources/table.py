"""Datasets held as tables inside the catalog (CSV imports, predictions).

Read through a connection of the reader's own, read-only (``query_only``) and with an
authorizer that allows nothing but reading this one table and a few functions, so even a
mistake in the filter compiler could not write or read elsewhere. Filters become SQL of the
site's own making with literals as bound parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from silolink.analytics import where as where_mod

from .base import DEFAULT_BATCH_ROWS, Batch, Source, column_array

_FUNCTIONS = {"count", "min", "max", "sum", "total"}


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


class TableSource(Source):
    kind = "table"

    def _connect(self) -> sqlite3.Connection:
        # A connection of its own: a long read must not hold the catalog's lock or transaction.
        conn = sqlite3.connect(self.catalog_path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorizer(self.name))
        return conn

    def _condition(self, where: where_mod.Node | None, present: Sequence[str]) -> tuple[str, list]:
        condition, params = where_mod.compile_sql(where, self.column_type)
        for name in present:
            condition += f" AND {where_mod.quote_identifier(name)} IS NOT NULL"
        return condition, params

    def count(self, where: where_mod.Node | None = None) -> int:
        condition, params = self._condition(where, ())
        conn = self._connect()
        try:
            table = where_mod.quote_identifier(self.name)
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {condition}", params).fetchone()
            return count
        finally:
            conn.close()

    def scan(
        self,
        columns: Sequence[str],
        where: where_mod.Node | None = None,
        present: Sequence[str] = (),
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[Batch]:
        self.check_columns([*columns, *present])
        condition, params = self._condition(where, present)
        select = ", ".join(where_mod.quote_identifier(c) if c != "rowid" else "rowid" for c in columns) or "1"
        kinds = [self.column_type(c) for c in columns]
        conn = self._connect()
        try:
            cursor = conn.execute(
                f"SELECT {select} FROM {where_mod.quote_identifier(self.name)} WHERE {condition} ORDER BY rowid",
                params,
            )
            while rows := cursor.fetchmany(batch_rows):
                cells = list(zip(*rows, strict=True)) if columns else []
                yield {c: column_array(list(v), k) for c, v, k in zip(columns, cells, kinds, strict=True)}
        finally:
            conn.close()
