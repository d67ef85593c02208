"""SQL databases read in place, read-only, through SQLAlchemy (PostgreSQL via psycopg, and
any database SQLAlchemy has a driver for).

- Credentials never enter the catalog: a URL with a password in it is refused; write
  ``${NAME}`` where the password goes, and the agent reads it when it connects, from the
  environment variable NAME or the file ``secrets/NAME`` in its data directory. What is
  shown or logged is the URL with the password masked; nothing about the source is sent to
  the coordinator.
- Read-only: PostgreSQL sessions start with ``default_transaction_read_only``, SQLite with
  ``query_only``, MySQL and MariaDB with a read-only session, and every read is rolled back.
  A query that writes (a data-modifying CTE, ``nextval``) fails at registration, so it is
  never recorded. Other dialects have no session switch silolink can set (SQL Server has
  none; its ``ApplicationIntent=ReadOnly`` only routes to a replica), so their sources are
  refused unless the site's ``[catalog] sql_without_read_only`` names the dialect, which it
  should only for an account that can do nothing but read. Give the agent a database
  account that can only read in any case.
- A database that refuses or drops the connection is FAILED_PRECONDITION naming the
  dataset (not UNAVAILABLE, which the coordinator reads as the site itself being away).
  Error messages name the dataset and the kind of failure only; the database's host and
  account and the driver's own words (which name them) go in ``site_detail``, which the
  site's CLI shows and its log records and no reply carries.
- Filters are SQLAlchemy expressions: column names from the site's own schema, the
  coordinator's literals only as bound parameters. Counts and sums run in the database.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.analytics import where as where_mod

from ..schema import Column
from .base import DEFAULT_BATCH_ROWS, Batch, Source, column_array

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}")
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")
SAMPLE_ROWS = 1000
CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "silolink-agent"
# Dialects whose sessions the agent makes read-only (see _engine).
READ_ONLY_DIALECTS = ("postgresql", "sqlite", "mysql", "mariadb")
_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _secrets(location: str, data_dir: Path, dataset: str) -> dict[str, str]:
    """Each ``${NAME}`` of the URL, read from the environment or DATA_DIR/secrets/NAME."""
    values = {}
    for name in PLACEHOLDER.findall(location):
        if name in os.environ:
            values[name] = os.environ[name]
            continue
        path = data_dir / "secrets" / name
        try:
            values[name] = path.read_text().strip()
        except OSError:
            raise errors.FailedPrecondition(
                f"dataset {dataset!r}: a secret its database URL refers to is not set at this site; set it in the "
                "agent's environment or in its secrets directory (the file readable by the agent only)",
                site_detail=f"${{{name}}} is neither set in the agent's environment nor in {path}",
            ) from None
    return values


def _resolve(location: str, secrets: dict[str, str]) -> str:
    from urllib.parse import quote

    return PLACEHOLDER.sub(lambda m: quote(secrets[m.group(1)], safe=""), location)


def display_url(location: str) -> str:
    """The URL as it may be shown: any password masked (placeholders too)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(location).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as nothing but its scheme
        return location.split("://", 1)[0] + "://..."


def _engine(location: str, data_dir: Path, dataset: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    secrets = _secrets(location, data_dir, dataset)
    try:
        url = sa.engine.make_url(_resolve(location, secrets))
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
        raise errors.InvalidArgument(
            f"dataset {dataset!r}: its source is not a database URL SQLAlchemy understands ({type(e).__name__}); "
            "write it as DIALECT[+DRIVER]://USER:${PASSWORD_VAR}@HOST/DATABASE",
            site_detail=display_url(location),
        ) from None
    backend = url.get_backend_name()
    _check_read_only(backend, data_dir, dataset)
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {
            "options": "-c default_transaction_read_only=on",
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": APPLICATION_NAME,
        }
    try:
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except Exception as e:  # noqa: BLE001 - e.g. the URL's driver is not installed
        raise errors.FailedPrecondition(
            f"dataset {dataset!r}: the agent cannot use its {backend!r} database ({type(e).__name__}); install the "
            "database's driver in the agent's environment",
            site_detail=f"{display_url(location)}: {_detail(e, secrets)}",
        ) from None

    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection, _record) -> None:
            dbapi_connection.execute("PRAGMA query_only = ON")

    elif backend in ("mysql", "mariadb"):

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.close()

    return engine, secrets


def _check_read_only(backend: str, data_dir: Path, dataset: str) -> None:
    """Refuse a dialect the agent cannot make read-only, unless the site's agent.toml allows
    it. Read from the data directory at each connection (as the CLI and the agent both see
    it), so a change to the setting applies at once."""
    if backend in READ_ONLY_DIALECTS:
        return
    from silolink import config as config_mod

    from ...layout import AgentLayout

    layout = AgentLayout(data_dir)
    allowed = config_mod.load(config_mod.AgentConfig, layout.config, "SILOLINK_AGENT").catalog.sql_without_read_only
    if backend not in allowed:
        raise errors.FailedPrecondition(
            f"dataset {dataset!r}: silolink cannot make a {backend!r} database session read-only (it can for "
            f"{', '.join(READ_ONLY_DIALECTS)}), so a query could write to it; give the agent an account that can "
            f'only read, then allow the dialect with sql_without_read_only = ["{backend}"] under [catalog] in '
            "agent.toml",
            site_detail=str(layout.config),
        )


def _detail(e: BaseException, secrets: dict[str, str]) -> str:
    """The driver's own first line, with any secret scrubbed, never SQLAlchemy's parameters."""
    original = getattr(e, "orig", None) or e
    text = (str(original).strip().splitlines() or [type(original).__name__])[0][:300]
    for value in secrets.values():
        if value:
            text = text.replace(value, "***")
    return text


def _sqlstate(e: BaseException) -> str:
    original = getattr(e, "orig", None)
    return str(getattr(original, "sqlstate", "") or getattr(original, "pgcode", "") or "")


def _column_type_of(sql_type) -> str:
    import sqlalchemy as sa

    if isinstance(sql_type, sa.Integer | sa.Boolean):
        return "INTEGER"
    if isinstance(sql_type, sa.Float | sa.Numeric):
        return "REAL"
    return "TEXT"


def _value_type(values: list) -> str:
    """A query column's type, from sample values (None where all are empty: TEXT)."""
    from decimal import Decimal

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool | int) for v in present):
        return "INTEGER"
    if present and all(isinstance(v, bool | int | float | Decimal) for v in present):
        return "REAL"
    return "TEXT"


def _check_query(query: str) -> str:
    text = query.strip().rstrip(";").strip()
    if not re.match(r"(?is)^(select|with)\b", text):
        raise errors.InvalidArgument("--query must be one SELECT (or WITH ... SELECT) statement that reads")
    if ";" in text:
        raise errors.InvalidArgument("--query must be a single statement: remove the ';' inside it")
    return text


def probe(
    name: str, location: str, table: str | None, query: str | None, catalog_path: Path
) -> tuple[str, tuple[Column, ...], int, dict[str, Any], str]:
    """(location, columns, rows, options, display) of a database source, checked by reading it."""
    import sqlalchemy as sa

    if bool(table) == bool(query):
        raise errors.InvalidArgument(
            f"dataset {name!r}: a database source needs --table T or --query SQL (one of them)"
        )
    try:
        password = sa.engine.make_url(location).password
    except Exception:  # noqa: BLE001 - reported by _engine below with advice
        password = None
    if password and not PLACEHOLDER.fullmatch(str(password)):
        raise errors.InvalidArgument(
            f"dataset {name!r}: the URL holds a password, which would be stored in the catalog; put it in an "
            "environment variable (or DATA_DIR/secrets/NAME) and write ${NAME} in its place, such as "
            "postgresql://reader:${PG_PASSWORD}@db.example.org/clinic"
        )
    options: dict[str, Any] = {}
    if table:
        if not TABLE_NAME.match(table):
            raise errors.InvalidArgument(f"dataset {name!r}: --table {table!r} is not a table name (use schema.table)")
        options["table"] = table
    else:
        options["query"] = _check_query(query or "")
    display = f"sql:{display_url(location)} " + (f"table {table}" if table else "query")
    source = SqlSource.unregistered(name, location, options, catalog_path)
    columns = source.discover()
    source._types = {c.name: c.type for c in columns}
    return location, columns, source.count(), options, display


class SqlSource(Source):
    kind = "sql"

    @classmethod
    def unregistered(cls, name: str, location: str, options: dict[str, Any], catalog_path: Path) -> SqlSource:
        from ..store import Dataset

        dataset = Dataset(name, (), None, None, 0, "", 0.0, kind="sql", location=location, options=options)
        return cls(dataset, catalog_path)

    # -- connection and errors ----------------------------------------------------------
    def _connect(self):
        import sqlalchemy as sa

        engine, self._secret_values = _engine(self.dataset.location, self.catalog_path.parent, self.name)
        try:
            return engine.connect()
        except sa.exc.DBAPIError as e:
            raise self.fail(
                "cannot connect to its database",
                "check that the server is running and accepts this site's account, then retry",
                site_detail=f"{display_url(self.dataset.location)}: {_detail(e, self._secret_values)}",
            ) from None

    def _failure(self, e: Exception, started: bool) -> errors.SiloError:
        import sqlalchemy as sa

        detail = _detail(e, getattr(self, "_secret_values", {}))
        where = f"{display_url(self.dataset.location)}: {detail}"  # the site's eyes only
        state = _sqlstate(e)
        if state == "25006" or "readonly" in detail.lower().replace("-", "").replace(" ", ""):
            return self.fail(
                "the query writes to the database",
                "a source is read-only: register a SELECT that only reads",
                site_detail=where,
            )
        if isinstance(e, sa.exc.OperationalError) and (started or state.startswith("08") or not state):
            what = "the connection to the database was lost while reading" if started else "the database failed"
            return self.fail(what, "retry once the database is back", site_detail=where)
        return self.fail(
            f"the database refused the read{f' (SQLSTATE {state})' if state else ''}",
            "check that the table, view or query still exists and that this site's account may read it "
            "(edge-agent data add --replace to register it again)",
            site_detail=where,
        )

    # -- what to read ----------------------------------------------------------------------
    def _from(self, names: Sequence[str]):
        import sqlalchemy as sa

        table = self.dataset.options.get("table")
        if table:
            schema, _, bare = table.rpartition(".")
            return sa.table(bare, *(sa.column(n) for n in names), schema=schema or None)
        return sa.text(self.dataset.options["query"]).columns(*(sa.column(n) for n in names)).subquery("src")

    def _all_names(self) -> list[str]:
        return [c.name for c in self.dataset.columns] or list(self._types)

    def _condition(self, src, where: where_mod.Node | None, present: Sequence[str]):
        import sqlalchemy as sa

        def leaf(n: where_mod.Comparison):
            column = src.c[n.column]
            # The literal travels as a bound parameter, never as SQL text.
            return sa.and_(_COMPARE[n.op](column, sa.bindparam(None, n.value, unique=True)), column.is_not(None))

        def join(op: str, items: list):
            return sa.and_(*items) if op == "and" else sa.or_(*items)

        clauses = [where_mod.fold(where, self.column_type, leaf, join)] if where is not None else []
        clauses += [src.c[n].is_not(None) for n in present]
        return sa.and_(sa.true(), *clauses)

    def discover(self) -> tuple[Column, ...]:
        """The source's columns and types (tables by reflection, queries from sample rows);
        runs the query once in a read-only transaction, so a query that writes fails here."""
        import sqlalchemy as sa

        conn = self._connect()
        try:
            table = self.dataset.options.get("table")
            if table:
                schema, _, bare = table.rpartition(".")
                try:
                    reflected = sa.inspect(conn).get_columns(bare, schema=schema or None)
                except sa.exc.NoSuchTableError:
                    raise self.fail(
                        f"the database has no table or view {table!r}", "check --table (schema.table works)"
                    ) from None
                columns = tuple(Column(c["name"], _column_type_of(c["type"])) for c in reflected)
            else:
                result = conn.execute(sa.text(self.dataset.options["query"]))
                names = list(result.keys())
                sample = result.fetchmany(SAMPLE_ROWS)
                result.close()
                cells = list(zip(*sample, strict=True)) if sample else [[] for _ in names]
                columns = tuple(Column(n, _value_type(list(v))) for n, v in zip(names, cells, strict=True))
        except sa.exc.DBAPIError as e:
            raise self._failure(e, started=False) from None
        finally:
            conn.rollback()
            conn.close()
        bad = [c.name for c in columns if not re.match(r"^[^\[\]\"]+$", c.name)]
        if bad or len({c.name.lower() for c in columns}) != len(columns):
            raise self.fail(
                'its columns have names the catalog cannot hold (empty, repeated, or with [ ] ")',
                "give every column a distinct plain name (AS name in the query)",
                errors.InvalidArgument,
            )
        return columns

    # -- the interface ---------------------------------------------------------------------
    def count(self, where: where_mod.Node | None = None) -> int:
        import sqlalchemy as sa

        src = self._from(self._all_names())
        statement = sa.select(sa.func.count()).select_from(src).where(self._condition(src, where, ()))
        return int(self._scalar_row(statement)[0])

    def summarize(
        self, column: str, where: where_mod.Node | None = None, bounds: tuple[float, float] | None = None
    ) -> tuple[int, int | float]:
        """Pushed down: the database counts and sums (clipped with CASE, bounds bound)."""
        import sqlalchemy as sa

        src = self._from(self._all_names())
        value = src.c[column]
        if bounds is not None:
            lo, hi = (
                sa.bindparam(None, float(bounds[0]), unique=True),
                sa.bindparam(None, float(bounds[1]), unique=True),
            )
            value = sa.case((value < lo, lo), (value > hi, hi), else_=sa.cast(value, sa.Float))
        statement = sa.select(sa.func.count(src.c[column]), sa.func.sum(value)).select_from(src)
        rows, total = self._scalar_row(statement.where(self._condition(src, where, [column])))
        if self.column_type(column) == "INTEGER" and bounds is None:
            return int(rows), int(total or 0)
        return int(rows), float(total or 0.0)

    def _scalar_row(self, statement) -> tuple:
        import sqlalchemy as sa

        conn = self._connect()
        try:
            return tuple(conn.execute(statement).one())
        except sa.exc.DBAPIError as e:
            raise self._failure(e, started=False) from None
        finally:
            _close(conn)

    def scan(
        self,
        columns: Sequence[str],
        where: where_mod.Node | None = None,
        present: Sequence[str] = (),
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[Batch]:
        import sqlalchemy as sa

        self.check_columns([*columns, *present])
        wanted = [c for c in columns if c != "rowid"]
        src = self._from(self._all_names())
        statement = sa.select(*(src.c[c] for c in wanted)).select_from(src).where(self._condition(src, where, present))
        kinds = [self.column_type(c) for c in wanted]
        conn = self._connect()
        started, position = False, 0
        try:
            # A server-side cursor: the database hands over batch_rows rows at a time.
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(statement)
            for rows in result.partitions(batch_rows):
                started = True
                cells = list(zip(*rows, strict=True))
                batch = {c: column_array(list(v), k) for c, v, k in zip(wanted, cells, kinds, strict=True)}
                if "rowid" in columns:
                    import numpy as np

                    batch["rowid"] = np.arange(position + 1, position + len(rows) + 1, dtype=np.int64)
                position += len(rows)
                yield batch
        except sa.exc.DBAPIError as e:
            raise self._failure(e, started) from None
        finally:
            _close(conn)


def _close(conn) -> None:
    """Roll back and close; a connection that is already gone has nothing to undo."""
    try:
        conn.rollback()
        conn.close()
    except Exception:  # noqa: BLE001 - the database went away; the read already failed
        conn.invalidate()
