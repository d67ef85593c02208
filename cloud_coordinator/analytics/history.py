"""The coordinator's query history: every federated query with who asked, what, of which
sites, how it ended, which sites refused and why, and the totals.

The totals are the operator's answer (what ``RunQuery`` returned); a site's own value never
reaches the coordinator, so it cannot be kept here. Sites' refusal reasons are kept as they
gave them: sites say why they refuse (policy, cohort below their minimum), never how many
rows they hold. Retention is bounded by count and by age ([analytics] settings).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from silolink import errors
from silolink.analytics.query import STATISTIC_NAMES
from silolink.db import Migrations, SqliteStore
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.common.v1.site_pb2 import SiteSelector
from silolink.paging import page_bounds

log = logging.getLogger(__name__)

migrations = Migrations("coordinator.analytics")

OUTCOMES = ("answered", "refused", "failed")
# Site failures that mean "could not answer" rather than "said no".
GONE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# What one entry keeps at most: a query over ten thousand sites that every site refuses
# still makes a row of bounded size.
MAX_KEPT_SELECTORS = 100
MAX_KEPT_REFUSALS = 1000
MAX_REASON_CHARS = 500
MAX_TEXT_CHARS = 4000
DEFAULT_PAGE_SIZE = 50


@migrations()
def m001_query_history(db) -> None:
    db["query_history"].create(
        {
            "seq": int,  # rowid: newest last; retention by count deletes the lowest
            "query_id": str,
            "asked_by": str,
            "asked_at": float,
            "finished_at": float,
            "dataset": str,
            "statistic": str,
            "query": bytes,  # silolink.analytics.v1.Query, as asked (bounded)
            "selectors": bytes,  # RunQueryRequest holding only its selectors
            "sites": str,  # JSON list of the sites asked
            "outcome": str,
            "reason": str,
            "refusals": str,  # JSON [{site, code, reason}], at most MAX_KEPT_REFUSALS
            "refusal_count": int,
            "totals": str,  # JSON: count / sum / mean / bin_counts / below / above
            "noise": str,  # JSON {site: epsilon}
        },
        pk="seq",
        not_null={"query_id", "asked_by", "asked_at", "outcome"},
    )
    db["query_history"].create_index(["query_id"], unique=True)
    db["query_history"].create_index(["asked_at"])
    db["query_history"].create_index(["dataset", "seq"])
    db["query_history"].create_index(["asked_by", "seq"])


# The index behind the site filter: which entries name a site, without a row per (entry,
# site) (a query over 10,000 sites kept 10,000 times would be 100M rows). An FTS5 index
# over the JSON list of names: external content (the text stays only in query_history),
# detail=none (one posting per name and entry, no positions), no column sizes. The
# tokenizer keeps '-' inside a token, so each name in the list (lowercase letters, digits,
# '-', quoted by JSON) is one whole token: "site-1" is not a token of "site-10", nor "a"
# of "hospital-a". Triggers keep it in step with every insert, delete (retention) and
# update of the table.
SITES_INDEX = "query_history_sites"


@migrations()
def m002_query_history_sites_index(db) -> None:
    db.execute(
        f"CREATE VIRTUAL TABLE {SITES_INDEX} USING fts5(sites, content='query_history', content_rowid='seq',"
        " detail=none, columnsize=0, tokenize=\"unicode61 remove_diacritics 0 tokenchars '-'\")"
    )
    db.execute(
        f"CREATE TRIGGER {SITES_INDEX}_insert AFTER INSERT ON query_history BEGIN"
        f" INSERT INTO {SITES_INDEX}(rowid, sites) VALUES (new.seq, new.sites); END"
    )
    # An external-content index forgets a row by being told its old text.
    db.execute(
        f"CREATE TRIGGER {SITES_INDEX}_delete AFTER DELETE ON query_history BEGIN"
        f" INSERT INTO {SITES_INDEX}({SITES_INDEX}, rowid, sites) VALUES ('delete', old.seq, old.sites); END"
    )
    db.execute(
        f"CREATE TRIGGER {SITES_INDEX}_update AFTER UPDATE OF seq, sites ON query_history BEGIN"
        f" INSERT INTO {SITES_INDEX}({SITES_INDEX}, rowid, sites) VALUES ('delete', old.seq, old.sites);"
        f" INSERT INTO {SITES_INDEX}(rowid, sites) VALUES (new.seq, new.sites); END"
    )
    # Entries kept before this migration: index them from the table.
    db.execute(f"INSERT INTO {SITES_INDEX}({SITES_INDEX}) VALUES ('rebuild')")


# A filter made only of these characters is one whole token of the index, and JSON quotes
# it without escaping it, so the index finds every entry naming it. Any other filter
# (which no enrolled site's name can equal) is checked row by row, as exact as before.
INDEXED_NAME = re.compile(r"[A-Za-z0-9-]+")


@dataclass(frozen=True)
class Refusal:
    site: str
    code: str  # gRPC status code name
    reason: str


@dataclass(frozen=True)
class HistoryEntry:
    """One query as kept."""

    query_id: str
    asked_by: str
    asked_at: float
    finished_at: float
    query: pb.Query
    selectors: list[SiteSelector]
    sites: list[str]
    outcome: str
    reason: str = ""
    refusals: list[Refusal] = field(default_factory=list)
    refusal_count: int = 0
    totals: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryFilter:
    dataset: str = ""
    asked_by: str = ""  # NAME or operator:NAME
    site: str = ""
    outcome: str = ""  # one of OUTCOMES, or "" for any
    query_id: str = ""

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.dataset:
            clauses.append("dataset = ?")
            params.append(self.dataset)
        if self.asked_by:
            clauses.append("asked_by = ?")
            params.append(self.asked_by if ":" in self.asked_by else f"operator:{self.asked_by}")
        if self.site:
            if INDEXED_NAME.fullmatch(self.site):
                # The index gives the entries naming the site (as one whole token, its case
                # folded); the entries it gives are then checked exactly, below.
                clauses.append(f"seq IN (SELECT rowid FROM {SITES_INDEX} WHERE {SITES_INDEX} MATCH ?)")  # noqa: S608
                params.append(f'"{self.site}"')
            # The JSON list holds each name quoted: an exact name, never a part of one.
            clauses.append("instr(sites, ?) > 0")
            params.append(json.dumps(self.site))
        if self.outcome:
            if self.outcome not in OUTCOMES:
                raise errors.InvalidArgument(f"outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")
            clauses.append("outcome = ?")
            params.append(self.outcome)
        if self.query_id:
            clauses.append("query_id = ?")
            params.append(self.query_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class QueryHistoryStore(SqliteStore):
    """The query history table. One row per query, written once when it ends."""

    migrations = migrations

    def add(self, entry: HistoryEntry, max_entries: int, oldest: float) -> None:
        """Insert ``entry`` and delete what retention no longer keeps, in one transaction."""
        selectors = pb.RunQueryRequest(sites=entry.selectors[:MAX_KEPT_SELECTORS]).SerializeToString()
        row = {
            "query_id": entry.query_id,
            "asked_by": entry.asked_by,
            "asked_at": entry.asked_at,
            "finished_at": entry.finished_at,
            "dataset": entry.query.dataset[:MAX_TEXT_CHARS],
            "statistic": STATISTIC_NAMES.get(entry.query.statistic, ""),
            "query": _bounded(entry.query).SerializeToString(),
            "selectors": selectors,
            "sites": json.dumps(entry.sites),
            "outcome": entry.outcome,
            "reason": entry.reason[:MAX_TEXT_CHARS],
            "refusals": json.dumps([r.__dict__ for r in entry.refusals[:MAX_KEPT_REFUSALS]]),
            "refusal_count": entry.refusal_count,
            "totals": json.dumps(entry.totals),
            "noise": json.dumps(entry.noise),
        }
        with self.atomic():
            table = self.db["query_history"]
            table.insert(row, replace=False)
            newest = self.db.execute("SELECT max(seq) FROM query_history").fetchone()[0]
            self.db.execute("DELETE FROM query_history WHERE seq <= ?", [newest - max_entries])
            self.db.execute("DELETE FROM query_history WHERE asked_at < ?", [oldest])

    def find(self, flt: HistoryFilter, page_size: int, page_token: str) -> tuple[list[HistoryEntry], int, str]:
        """One page, newest first: (entries, how many match in all, the next page's token)."""
        where, params = flt.where()
        with self.lock:
            total = self.db.execute(f"SELECT count(*) FROM query_history{where}", params).fetchone()[0]  # noqa: S608
            start, end, next_token = page_bounds(page_size, page_token, total)
            rows = self.db.execute(
                f"SELECT * FROM query_history{where} ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608
                [*params, end - start, start],
            )
            columns = [d[0] for d in rows.description]
            found = [_entry(dict(zip(columns, r, strict=True))) for r in rows.fetchall()]
        return found, total, next_token

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM query_history").fetchone()[0]


def _bounded(query: pb.Query) -> pb.Query:
    """The query with its free text cut to what a well-formed one can hold (a refused query
    may be any size the message limit allows)."""
    if len(query.dataset) <= MAX_TEXT_CHARS and len(query.column) <= MAX_TEXT_CHARS:
        if len(query.where) <= MAX_TEXT_CHARS and len(query.bin_edges) <= 1001:
            return query
    kept = pb.Query()
    kept.CopyFrom(query)
    kept.dataset, kept.column = query.dataset[:MAX_TEXT_CHARS], query.column[:MAX_TEXT_CHARS]
    kept.where = query.where[:MAX_TEXT_CHARS]
    del kept.bin_edges[1001:]
    return kept


def _entry(row: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        query_id=row["query_id"],
        asked_by=row["asked_by"],
        asked_at=row["asked_at"],
        finished_at=row["finished_at"],
        query=pb.Query.FromString(row["query"] or b""),
        selectors=list(pb.RunQueryRequest.FromString(row["selectors"] or b"").sites),
        sites=json.loads(row["sites"] or "[]"),
        outcome=row["outcome"],
        reason=row["reason"] or "",
        refusals=[Refusal(**r) for r in json.loads(row["refusals"] or "[]")],
        refusal_count=row["refusal_count"] or 0,
        totals=json.loads(row["totals"] or "{}"),
        noise=json.loads(row["noise"] or "{}"),
    )


class QueryHistory:
    """Keeps each query's entry when it ends; lists them for the admin API."""

    def __init__(
        self,
        store: QueryHistoryStore,
        max_entries: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self.clock = clock

    def keep(
        self,
        *,
        query_id: str,
        asked_by: str,
        asked_at: float,
        query: pb.Query,
        selectors: Sequence[SiteSelector],
        sites: Sequence[str],
        failures: dict[str, errors.SiloError],
        error: errors.SiloError | None = None,
        totals: dict[str, Any] | None = None,
        noise: dict[str, float] | None = None,
    ) -> None:
        """Record one finished query. A failure to write is logged, never raised: the query's
        answer (or its error) still reaches the operator, and the audit log has it."""
        refusals = [Refusal(site, e.code.name, e.message[:MAX_REASON_CHARS]) for site, e in sorted(failures.items())]
        if error is None:
            outcome = "answered"
        elif any(r.code not in GONE_CODES for r in refusals):
            outcome = "refused"
        else:
            outcome = "failed"
        entry = HistoryEntry(
            query_id=query_id,
            asked_by=asked_by,
            asked_at=asked_at,
            finished_at=self.clock(),
            query=query,
            selectors=list(selectors),
            sites=sorted(sites),
            outcome=outcome,
            reason=error.message if error is not None else "",
            refusals=refusals,
            refusal_count=len(refusals),
            totals=dict(totals or {}),
            noise=dict(noise or {}),
        )
        try:
            self._store.add(entry, self._max_entries, entry.finished_at - self._max_age_s)
        except Exception:  # noqa: BLE001 - the history is a convenience; the audit log is the record
            log.exception("query %s: writing it to the query history failed", query_id)

    def find(self, flt: HistoryFilter, page_size: int = 0, page_token: str = "") -> tuple[list[HistoryEntry], int, str]:
        """One page (``page_size`` 0: 50 entries), newest first: (entries, how many match in
        all, the next page's token)."""
        return self._store.find(flt, page_size or DEFAULT_PAGE_SIZE, page_token)
