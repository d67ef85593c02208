"""The broker's tables: envelopes (header, wrapped key, signature, small ciphertexts inline),
sharing agreements and the sites' published HPKE keys. Nothing here can open an envelope."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from silolink.db import Migrations, SqliteStore
from silolink.envelope import Header

migrations = Migrations("coordinator.exchange")

HEADER_FIELDS = [f.name for f in dataclasses.fields(Header)]
_header_values = operator.attrgetter(*HEADER_FIELDS)


@migrations()
def m001_exchange(db) -> None:
    db.execute(
        """CREATE TABLE envelopes (
            envelope_id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            purpose TEXT NOT NULL,
            recipient_key_id TEXT NOT NULL,
            suite TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            ttl_s INTEGER NOT NULL,
            payload_size INTEGER NOT NULL,
            chunk_size INTEGER NOT NULL,
            sealed_key BLOB,
            signature BLOB NOT NULL,
            sender_cert TEXT,
            ciphertext_size INTEGER NOT NULL,
            inline BLOB,
            in_file INTEGER NOT NULL,
            received_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL,
            done_at REAL
        )"""
    )
    # Senders' certificates, once each: envelopes refer to them by SHA-256 fingerprint.
    db.execute("CREATE TABLE sender_certs (fingerprint TEXT PRIMARY KEY, pem TEXT NOT NULL)")
    db.execute("CREATE INDEX envelopes_inbox ON envelopes (recipient, state, received_at)")
    db.execute("CREATE INDEX envelopes_expiry ON envelopes (state, expires_at)")
    db["agreements"].create(
        {
            "id": str,
            "sender": str,
            "recipient": str,
            "purpose": str,
            "state": str,
            "created_at": float,
            "created_by": str,
            "accepted_at": float,
            "revoked_at": float,
        },
        pk="id",
        not_null={"sender", "recipient", "purpose", "state", "created_at", "created_by"},
    )
    db["site_keys"].create(
        {
            "site": str,
            "key_id": str,
            "suite": str,
            "public_key": bytes,
            "created_at_ms": int,
            "signature": bytes,
            "certificate_pem": str,
            "published_at": float,
            "superseded_at": float,
        },
        pk=("site", "key_id"),
        not_null={"suite", "public_key", "created_at_ms", "signature", "certificate_pem", "published_at"},
    )


@migrations()
def m002_segments(db) -> None:
    # Small envelopes committed in batches keep sealed key and ciphertext in a segment file
    # (see segments.py): the row says which, where, and how much of it is the sealed key.
    db.execute("ALTER TABLE envelopes ADD COLUMN segment INTEGER")
    db.execute("ALTER TABLE envelopes ADD COLUMN segment_offset INTEGER")
    db.execute("ALTER TABLE envelopes ADD COLUMN sealed_key_size INTEGER")


@migrations()
def m003_agreement_study(db) -> None:
    # Every agreement belongs to a study (issue 18); older ones were the default study's.
    db["agreements"].add_column("study", str, not_null_default="")


@migrations()
def m004_queue_indexes(db) -> None:
    # ListQueues sums what waits per site (the console's Exchange page and overview): covering
    # indexes let SQLite count and add sizes without reading the envelope rows themselves.
    db.execute("CREATE INDEX envelopes_waiting_for ON envelopes (state, recipient, ciphertext_size)")
    db.execute("CREATE INDEX envelopes_waiting_from ON envelopes (state, sender, ciphertext_size)")


@dataclass(frozen=True)
class EnvelopeRecord:
    """An envelope as stored: ``state`` is pending, delivered or expired; only pending ones
    keep ciphertext (inline, in a file named by the id, or with its sealed key at
    ``segment_offset`` in segment ``segment``)."""

    header: Header
    sealed_key: bytes | None
    signature: bytes
    sender_cert: str | None
    ciphertext_size: int
    inline: bytes | None
    in_file: bool
    received_at: float
    expires_at: float
    state: str = "pending"
    done_at: float | None = None
    segment: int | None = None
    segment_offset: int | None = None
    sealed_key_size: int | None = None

    @classmethod
    def received(
        cls,
        header: Header,
        sealed_key: bytes,
        signature: bytes,
        sender_cert: str,
        ciphertext: bytes,
        received_at: float,
    ) -> EnvelopeRecord:
        """A whole envelope just received (pending, ciphertext inline, the rest defaults).

        The same object the constructor makes, at a third of its cost: one is made per
        envelope on the upload path, and a frozen dataclass sets each field through
        ``object.__setattr__``. Fields left out read their class-level defaults."""
        record = object.__new__(cls)
        record.__dict__.update(
            header=header,
            sealed_key=sealed_key,
            signature=signature,
            sender_cert=sender_cert,
            ciphertext_size=len(ciphertext),
            inline=ciphertext,
            in_file=False,
            received_at=received_at,
            expires_at=header.expires_at,
        )
        return record

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EnvelopeRecord:
        return cls(
            header=Header(**{k: row[k] for k in HEADER_FIELDS}),
            sealed_key=row["sealed_key"],
            signature=row["signature"],
            sender_cert=row["sender_cert"],
            ciphertext_size=row["ciphertext_size"],
            inline=row["inline"],
            in_file=bool(row["in_file"]),
            received_at=row["received_at"],
            expires_at=row["expires_at"],
            state=row["state"],
            done_at=row["done_at"],
            segment=row["segment"],
            segment_offset=row["segment_offset"],
            sealed_key_size=row["sealed_key_size"],
        )

    def row(self) -> tuple:
        return (
            *_header_values(self.header),
            self.sealed_key,
            self.signature,
            self.sender_cert,
            self.ciphertext_size,
            self.inline,
            int(self.in_file),
            self.received_at,
            self.expires_at,
            self.state,
            self.done_at,
            self.segment,
            self.segment_offset,
            self.sealed_key_size,
        )

    def segment_row_head(self) -> tuple:
        """The row of an envelope whose sealed key and ciphertext go to a segment, in
        ``_SEGMENT_COLUMNS`` order, less the last three: add ``(segment, offset, sealed key
        size)``."""
        return (
            *_header_values(self.header),
            self.signature,
            self.sender_cert,
            self.ciphertext_size,
            self.received_at,
            self.expires_at,
        )


_COLUMNS = [
    *HEADER_FIELDS,
    "sealed_key",
    "signature",
    "sender_cert",
    "ciphertext_size",
    "inline",
    "in_file",
    "received_at",
    "expires_at",
    "state",
    "done_at",
    "segment",
    "segment_offset",
    "sealed_key_size",
]
_INSERT = f"INSERT INTO envelopes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
# A small envelope kept in a segment binds only these columns; the others are the same for
# all of them (key and ciphertext in the segment, not in a file, pending) and are written
# as literals, since binding a value costs about as much as SQLite's insert of the row.
_SEGMENT_LITERALS = {"sealed_key": "NULL", "inline": "NULL", "in_file": "0", "state": "'pending'", "done_at": "NULL"}
_SEGMENT_COLUMNS = [c for c in _COLUMNS if c not in _SEGMENT_LITERALS]
# Rows per statement: each statement gives up the GIL while SQLite runs it, and under load
# taking it back can wait a whole switch interval behind another thread, so few large
# statements beat many small ones (23 columns x 1,024 rows stays far below SQLite's limit on
# bound values). A batch is cut into these sizes only, so every statement is prepared once
# and then reused from the connection's cache (preparing one of 1,000 rows costs more than
# running it); batches come in multiples of 256 (a request of whole envelopes) and most
# take one statement.
_INSERT_SIZES = (1024, 768, 512, 256, 64, 16, 4, 1)


def _insert_ignore(count: int, segment: bool) -> str:
    row = "(" + ", ".join(_SEGMENT_LITERALS.get(c, "?") if segment else "?" for c in _COLUMNS) + ")"
    return f"INSERT OR IGNORE INTO envelopes ({', '.join(_COLUMNS)}) VALUES " + ", ".join([row] * count)


_INSERTS_IGNORE = {
    segment: [(size, _insert_ignore(size, segment)) for size in _INSERT_SIZES] for segment in (False, True)
}
_META = ", ".join(c for c in _COLUMNS if c != "inline")


@dataclass(frozen=True)
class AgreementRecord:
    id: str
    sender: str
    recipient: str
    purpose: str
    state: str  # pending | active | revoked
    created_at: float
    created_by: str
    accepted_at: float | None = None
    revoked_at: float | None = None
    study: str = ""


@dataclass(frozen=True)
class SiteKeyRecord:
    site: str
    key_id: str
    suite: str
    public_key: bytes
    created_at_ms: int
    signature: bytes
    certificate_pem: str
    published_at: float
    superseded_at: float | None = None


class ExchangeStore(SqliteStore):
    """Envelopes, agreements and site keys. Writers group work with ``atomic()``."""

    migrations = migrations

    # -- envelopes -------------------------------------------------------------------------
    def insert_envelopes(self, records: list[EnvelopeRecord]) -> None:
        self.insert_rows([r.row() for r in records])

    def insert_rows(self, rows: list[tuple]) -> None:
        """Insert envelopes given as ``EnvelopeRecord.row()`` tuples."""
        with self.atomic():
            self.db.conn.executemany(_INSERT, rows)

    def insert_new_rows(self, rows: Sequence[tuple], segment_rows: Sequence[tuple] = ()) -> int:
        """Insert the envelopes whose id is not taken yet, given as ``EnvelopeRecord.row()``
        tuples and (for envelopes in segments) ``segment_row_head()`` tuples plus their
        segment columns; how many went in. The uniqueness check is the primary key's own
        look-up, so a batch without resends costs no separate query."""
        conn = self.db.conn
        with self.atomic():
            before = conn.total_changes
            for segment, some in ((False, rows), (True, segment_rows)):
                start = 0
                for size, sql in _INSERTS_IGNORE[segment]:
                    while len(some) - start >= size:
                        conn.execute(sql, list(chain.from_iterable(some[start : start + size])))
                        start += size
            return conn.total_changes - before

    def envelopes_by_id(self, ids: list[str]) -> dict[str, EnvelopeRecord]:
        """Metadata (no inline ciphertext) of the envelopes among ``ids`` that exist."""
        found: dict[str, EnvelopeRecord] = {}
        with self.lock:
            for start in range(0, len(ids), 4000):
                part = ids[start : start + 4000]
                sql = (
                    f"SELECT {_META}, NULL AS inline FROM envelopes WHERE envelope_id IN ({','.join('?' * len(part))})"
                )
                for row in self.db.query(sql, part):
                    found[row["envelope_id"]] = EnvelopeRecord.from_row(row)
        return found

    def get_envelope(self, envelope_id: str, with_ciphertext: bool = False) -> EnvelopeRecord | None:
        columns = "*" if with_ciphertext else f"{_META}, NULL AS inline"
        with self.lock:
            rows = list(self.db.query(f"SELECT {columns} FROM envelopes WHERE envelope_id = ?", [envelope_id]))
        return EnvelopeRecord.from_row(rows[0]) if rows else None

    def inbox(self, recipient: str, now: float) -> list[EnvelopeRecord]:
        with self.lock:
            rows = self.db.query(
                f"SELECT {_META}, NULL AS inline FROM envelopes WHERE recipient = ? AND state = 'pending' "
                "AND expires_at > ? ORDER BY received_at",
                [recipient, now],
            )
            return [EnvelopeRecord.from_row(r) for r in rows]

    def add_certificate(self, fingerprint: str, pem: str) -> None:
        with self.atomic():
            self.db.execute("INSERT OR IGNORE INTO sender_certs (fingerprint, pem) VALUES (?, ?)", [fingerprint, pem])

    def certificate(self, fingerprint: str) -> str | None:
        with self.lock:
            rows = list(self.db.query("SELECT pem FROM sender_certs WHERE fingerprint = ?", [fingerprint]))
        return rows[0]["pem"] if rows else None

    def finish_envelope(self, envelope_id: str, state: str, at: float) -> None:
        """Mark an envelope delivered or expired and drop its ciphertext (a tombstone stays
        until expiry so a resend of the same id is recognised)."""
        with self.atomic():
            self.db.execute(
                "UPDATE envelopes SET state = ?, done_at = ?, inline = NULL, sealed_key = NULL WHERE envelope_id = ?",
                [state, at, envelope_id],
            )

    def expired(self, now: float, limit: int = 1000) -> list[EnvelopeRecord]:
        with self.lock:
            rows = self.db.query(
                f"SELECT {_META}, NULL AS inline FROM envelopes WHERE state = 'pending' AND expires_at <= ? LIMIT ?",
                [now, limit],
            )
            return [EnvelopeRecord.from_row(r) for r in rows]

    def purge_tombstones(self, now: float) -> int:
        with self.atomic():
            cursor = self.db.execute("DELETE FROM envelopes WHERE state != 'pending' AND expires_at <= ?", [now])
            return cursor.rowcount

    def pending_bytes_by_sender(self) -> dict[str, int]:
        with self.lock:
            rows = self.db.query(
                "SELECT sender, SUM(ciphertext_size) AS total FROM envelopes WHERE state = 'pending' GROUP BY sender"
            )
            return {r["sender"]: r["total"] for r in rows}

    def queues(self) -> dict[str, list[int]]:
        """Per site: [envelopes in, bytes in, envelopes out, bytes out] waiting (state pending)."""
        found: dict[str, list[int]] = {}
        with self.lock:
            for column, at in (("recipient", 0), ("sender", 2)):
                rows = self.db.execute(
                    f"SELECT {column}, COUNT(*), COALESCE(SUM(ciphertext_size), 0) FROM envelopes "
                    f"WHERE state = 'pending' GROUP BY {column}"
                ).fetchall()
                for site, count, size in rows:
                    entry = found.setdefault(site, [0, 0, 0, 0])
                    entry[at], entry[at + 1] = count, size
        return found

    def pending_in_files(self) -> set[str]:
        with self.lock:
            return {
                r["envelope_id"]
                for r in self.db.query("SELECT envelope_id FROM envelopes WHERE state = 'pending' AND in_file = 1")
            }

    def pending_by_segment(self) -> dict[int, tuple[int, int]]:
        """Segment number -> (count, bytes) of its pending envelopes."""
        with self.lock:
            rows = self.db.query(
                "SELECT segment, COUNT(*) AS n, SUM(sealed_key_size + ciphertext_size) AS size FROM envelopes "
                "WHERE state = 'pending' AND segment IS NOT NULL GROUP BY segment"
            )
            return {r["segment"]: (r["n"], r["size"]) for r in rows}

    def pending_in_segment(self, segment: int) -> list[EnvelopeRecord]:
        with self.lock:
            rows = self.db.query(
                f"SELECT {_META}, NULL AS inline FROM envelopes WHERE state = 'pending' AND segment = ?", [segment]
            )
            return [EnvelopeRecord.from_row(r) for r in rows]

    def move_into_row(self, envelope_id: str, sealed_key: bytes, ciphertext: bytes) -> None:
        """Keep a pending envelope's bytes in its row instead of its segment."""
        with self.atomic():
            self.db.execute(
                "UPDATE envelopes SET sealed_key = ?, inline = ?, segment = NULL, segment_offset = NULL, "
                "sealed_key_size = NULL WHERE envelope_id = ? AND state = 'pending'",
                [sealed_key, ciphertext, envelope_id],
            )

    def pending_key_ids(self, recipient: str) -> set[str]:
        with self.lock:
            return {
                r["recipient_key_id"]
                for r in self.db.query(
                    "SELECT DISTINCT recipient_key_id FROM envelopes WHERE recipient = ? AND state = 'pending'",
                    [recipient],
                )
            }

    # -- agreements ------------------------------------------------------------------------
    def add_agreement(self, agreement: AgreementRecord) -> None:
        with self.lock:
            self.db["agreements"].insert(dataclasses.asdict(agreement))

    def get_agreement(self, agreement_id: str) -> AgreementRecord | None:
        with self.lock:
            rows = list(self.db["agreements"].rows_where("id = ?", [agreement_id]))
        return AgreementRecord(**rows[0]) if rows else None

    def list_agreements(self, site: str | None = None) -> list[AgreementRecord]:
        with self.lock:
            if site is None:
                rows = self.db["agreements"].rows_where(order_by="created_at")
            else:
                rows = self.db["agreements"].rows_where(
                    "sender = ? OR recipient = ?", [site, site], order_by="created_at"
                )
            return [AgreementRecord(**r) for r in rows]

    def agreements_page(
        self, site: str = "", state: str = "", limit: int = 0, offset: int = 0
    ) -> tuple[list[AgreementRecord], int]:
        """One page of the agreements (oldest first) matching the filters, and how many match."""
        clauses, args = [], []
        if site:
            clauses.append("(sender = ? OR recipient = ?)")
            args += [site, site]
        if state:
            clauses.append("state = ?")
            args.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit else ""
        with self.lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM agreements {where}", args).fetchone()[0]
            rows = self.db.query(f"SELECT * FROM agreements {where} ORDER BY created_at, id{page}", args)
            return [AgreementRecord(**r) for r in rows], total

    def update_agreement(self, agreement_id: str, **values: Any) -> None:
        with self.lock:
            self.db["agreements"].update(agreement_id, values)

    # -- site keys -------------------------------------------------------------------------
    def current_key(self, site: str) -> SiteKeyRecord | None:
        with self.lock:
            rows = list(
                self.db.query(
                    "SELECT * FROM site_keys WHERE site = ? AND superseded_at IS NULL "
                    "ORDER BY published_at DESC LIMIT 1",
                    [site],
                )
            )
        return SiteKeyRecord(**rows[0]) if rows else None

    def get_key(self, site: str, key_id: str) -> SiteKeyRecord | None:
        with self.lock:
            rows = list(self.db["site_keys"].rows_where("site = ? AND key_id = ?", [site, key_id]))
        return SiteKeyRecord(**rows[0]) if rows else None

    def put_key(self, key: SiteKeyRecord, now: float) -> None:
        """Make ``key`` the site's current key (superseding the previous one)."""
        with self.atomic():
            self.db.execute(
                "UPDATE site_keys SET superseded_at = ? WHERE site = ? AND superseded_at IS NULL AND key_id != ?",
                [now, key.site, key.key_id],
            )
            self.db["site_keys"].upsert(dataclasses.asdict(key), pk=("site", "key_id"))
