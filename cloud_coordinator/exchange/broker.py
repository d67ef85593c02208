"""The envelope broker: accept sealed envelopes, store them durably, hand them to their
recipient, forget them once acknowledged or expired. It never holds a key that opens one.

Storage: small envelopes (ciphertext up to ``inline_max_bytes``) that come whole, many to
a request, are appended to a segment file (segments.py) that is fdatasynced before the
transaction recording them; other small envelopes live in their database row; larger ones
stream into a temporary file that is fsynced, then renamed to ``blobs/<envelope id>`` by
the committer just before the transaction that records it. A receipt is sent only after
that transaction commits.
After delivery or expiry the ciphertext is deleted and a tombstone row (header only)
stays until the envelope's expiry, so a resend of the same id is recognised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from silolink import errors
from silolink.config import CoordinatorExchangeConfig
from silolink.envelope import Header

from ..audit.store import AuditLog
from ..sites.service import SiteService
from .audit_entries import send_entries
from .committer import GroupCommitter
from .registry import AgreementRegistry, SiteKeys
from .segments import Segments
from .store import EnvelopeRecord, ExchangeStore

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 300.0
MAX_SEALED_KEY_BYTES = 4096
MAX_SIGNATURE_BYTES = 256
READ_PIECE_BYTES = 1024 * 1024
# Tombstones outlive expiry by this much, so a late receive or resend gets a clear answer;
# after that a resend is refused anyway as expired.
TOMBSTONE_S = 24 * 3600.0
# A new segment is started once the active one holds this much.
SEGMENT_BYTES = 16 * 1024 * 1024
# Under the broker's root: large envelopes' ciphertext, one file each, and small ones' in
# segments (backups check that the files pending envelopes need are all there).
BLOBS_DIR = "blobs"
SEGMENTS_DIR = "segments"
# Segments whose pending envelopes fill less than this share of them are compacted.
SEGMENT_COMPACT_FILL = 0.25


class Receipt(NamedTuple):
    # A tuple, not a dataclass: one is made per envelope on the committer thread.
    envelope_id: str
    duplicate: bool
    expires_at: float


@dataclass(frozen=True)
class Sender:
    """The site on the other end of an upload stream and the certificate it presented
    (fingerprinted once per stream, not once per envelope)."""

    name: str
    cert_pem: str
    cert_fingerprint: str

    @classmethod
    def of(cls, name: str, cert_pem: str) -> Sender:
        return cls(name, cert_pem, hashlib.sha256(cert_pem.encode()).hexdigest())


@dataclass
class _Prepared:
    record: EnvelopeRecord
    tmp_path: Path | None
    sender: Sender
    # The request the envelope came in (its audit entry is shared with that request's others).
    request: object = None
    # For a small envelope bound for a segment: what goes there (sealed key and ciphertext)
    # and its row less the segment columns, made by the reader so the committer need not.
    segment_blob: bytes | None = None
    row_head: tuple = ()


@dataclass
class _Written:
    """A batch after the first stage of its commit: the segment bytes of its small
    envelopes on disk, and the rows to store, each list in batch order."""

    segment: int | None
    rows: list[tuple]  # EnvelopeRecord.row(): envelopes not in a segment
    segment_rows: list[tuple]  # segment_row_head() + (segment, offset, sealed key size)
    segment_bytes: int
    files: bool  # some envelope waits in a temporary file, to move in at commit


class _Resent(Exception):
    """A batch held an envelope id already stored (or twice): its transaction is undone."""


# A whole envelope as it arrives in one message: header, sealed key, ciphertext, signature.
Whole = tuple[Header, bytes, bytes, bytes]


class Upload:
    """One envelope arriving on a stream: ``add`` ciphertext, then ``finish``; ``abort`` on failure."""

    def __init__(self, broker: Broker, record: EnvelopeRecord, sender: Sender, tmp_path: Path | None) -> None:
        self._broker = broker
        self._record = record
        self._sender = sender
        self._tmp_path = tmp_path
        self._file = open(tmp_path, "wb") if tmp_path is not None else None  # noqa: SIM115 - closed in finish/abort
        self._buffer = bytearray() if tmp_path is None else None
        self._received = 0
        self._done = False

    @property
    def envelope_id(self) -> str:
        return self._record.header.envelope_id

    @property
    def memory_bytes(self) -> int:
        """What the envelope holds in memory until committed (nothing if it went to a file)."""
        return 0 if self._file is not None or self._tmp_path is not None else self._received

    def add(self, piece: bytes) -> None:
        self._received += len(piece)
        if self._received > self._record.ciphertext_size:
            raise errors.InvalidArgument(
                f"envelope {self.envelope_id} carries more ciphertext than its header declares"
            )
        if self._file is not None:
            self._file.write(piece)
        else:
            self._buffer += piece  # type: ignore[operator]

    def finish(self, signature: bytes) -> Future:
        """Close the envelope and queue it for commit; the future gives ``[Receipt]`` (or
        ``[error]``)."""
        return self._broker._committer.submit([self.prepare(signature)])

    def prepare(self, signature: bytes) -> _Prepared:
        """Close the envelope: check it is complete and make its ciphertext durable if it
        goes to a file. The caller submits it for commit."""
        if not signature or len(signature) > MAX_SIGNATURE_BYTES:
            raise errors.InvalidArgument(f"envelope {self.envelope_id} has no valid signature")
        if self._received != self._record.ciphertext_size:
            raise errors.InvalidArgument(
                f"envelope {self.envelope_id} carries {self._received} ciphertext bytes; its header declares "
                f"{self._record.ciphertext_size}"
            )
        inline = None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        else:
            inline = bytes(self._buffer)  # type: ignore[arg-type]
        self._done = True
        record = dataclasses.replace(self._record, signature=signature, inline=inline)
        return _Prepared(record, self._tmp_path, self._sender, self)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is not None:
            self._file.close()
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
        self._broker._release(self._record.header.sender, self._record.ciphertext_size)


class Broker:
    """Envelopes in, envelopes out; plain logic, no gRPC."""

    def __init__(
        self,
        store: ExchangeStore,
        agreements: AgreementRegistry,
        keys: SiteKeys,
        sites: SiteService,
        audit: AuditLog,
        config: CoordinatorExchangeConfig,
        root: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._agreements = agreements
        self._keys = keys
        self._sites = sites
        self._audit = audit
        self.config = config
        self._clock = clock
        self._blobs = root / BLOBS_DIR
        self._tmp = root / "tmp"
        self._segment_dir = root / SEGMENTS_DIR
        for folder in (root, self._blobs, self._tmp, self._segment_dir):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self._lock = threading.Lock()
        self._known_certs: set[str] = set()
        # Uploads check revocation here, not in the database (see SiteKeys' cache).
        self._revoked = {s.name for s in sites.list_sites() if s.revoked_at is not None}
        sites.on_revoke(self._revoked.add)
        self._recover()
        self._committer: GroupCommitter[_Prepared, Receipt] = GroupCommitter(
            self._commit, config.commit_batch_max, prepare=self._write_batch
        )
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="exchange-sweep", daemon=True)
        self._sweeper.start()

    # -- start and stop --------------------------------------------------------------------
    def _recover(self) -> None:
        """After a crash: drop half-written uploads and files no committed row refers to."""
        for path in self._tmp.iterdir():
            path.unlink(missing_ok=True)
        keep = self._store.pending_in_files()
        orphans = [p for p in self._blobs.iterdir() if p.name not in keep]
        for path in orphans:
            path.unlink(missing_ok=True)
        self._segments = Segments(self._segment_dir, SEGMENT_BYTES, self._store.pending_by_segment())
        self._pending = self._store.pending_bytes_by_sender()
        self._reserved: dict[str, int] = {}
        if orphans:
            log.info("removed %d envelope files left by an interrupted upload or delivery", len(orphans))

    def stop(self) -> None:
        self._stop.set()
        self._committer.stop()
        self._sweeper.join(5)
        self._segments.close()

    # -- sending ---------------------------------------------------------------------------
    def begin(self, sender: Sender, header: Header, sealed_key: bytes) -> Upload:
        """Check a new envelope's header against identity, agreements, keys and limits."""
        now = self._clock()
        self._admit(sender.name, header, sealed_key, now)
        size = header.ciphertext_size
        self._reserve(sender.name, size)
        record = EnvelopeRecord(
            header=header,
            sealed_key=sealed_key,
            signature=b"",
            sender_cert=sender.cert_fingerprint,
            ciphertext_size=size,
            inline=None,
            in_file=size > self.config.inline_max_bytes,
            received_at=now,
            expires_at=header.expires_at,
        )
        tmp = self._tmp / f"{header.envelope_id}.{uuid.uuid4().hex[:8]}" if record.in_file else None
        return Upload(self, record, sender, tmp)

    def send_whole(self, sender: Sender, envelopes: list[Whole]) -> tuple[Future | None, errors.SiloError | None]:
        """Admit whole envelopes and queue them for commit together.

        Returns the future of their receipts (one per envelope, in order) and the refusal
        that stopped the batch, if any: the envelopes before a refused one are still
        stored, exactly as if each had come in a request of its own.
        """
        prepared: list[_Prepared] = []
        failure: errors.SiloError | None = None
        request = object()
        inline_max = self.config.inline_max_bytes
        allowed: set[tuple] = set()
        now = self._clock()
        # One reservation for the request's small envelopes when they fit the quota (the
        # usual case) rather than one each under the lock; what is not stored is given back.
        bulk = sum(size for _, _, data, _ in envelopes if (size := len(data)) <= inline_max)
        in_bulk = self._try_reserve(sender.name, bulk)
        unused = bulk if in_bulk else 0
        for header, sealed_key, ciphertext, signature in envelopes:
            try:
                size = len(ciphertext)
                if size <= inline_max:
                    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
                        raise errors.InvalidArgument(f"envelope {header.envelope_id} has no valid signature")
                    # Admitted (header checked, chunk size included) before its sizes are computed.
                    self._admit(sender.name, header, sealed_key, now, allowed)
                    if size != header.ciphertext_size:
                        raise errors.InvalidArgument(
                            f"envelope {header.envelope_id} carries {size} ciphertext bytes; its header "
                            f"declares {header.ciphertext_size}"
                        )
                    if in_bulk:
                        unused -= size
                    else:
                        self._reserve(sender.name, size)
                    record = EnvelopeRecord.received(
                        header, sealed_key, signature, sender.cert_fingerprint, ciphertext, now
                    )
                    prepared.append(
                        _Prepared(record, None, sender, request, sealed_key + ciphertext, record.segment_row_head())
                    )
                    continue
                upload = self.begin(sender, header, sealed_key)
                try:
                    upload.add(ciphertext)
                    prepared.append(upload.prepare(signature))
                except BaseException:
                    upload.abort()
                    raise
            except errors.SiloError as e:
                failure = e
                break
        if unused:
            self._release(sender.name, unused)
        for p in prepared:
            p.request = request
        future = self._committer.submit(prepared) if prepared else None
        return future, failure

    def _admit(
        self, sender: str, header: Header, sealed_key: bytes, now: float, allowed: set[tuple] | None = None
    ) -> None:
        """Raise unless ``header`` may be stored now. ``allowed`` remembers, for one request
        of whole envelopes, the (recipient, purpose, key) triples already checked."""
        route = (header.recipient, header.purpose, header.recipient_key_id, header.suite)
        known_route = allowed is not None and route in allowed
        if known_route:
            header.check_own()
        else:
            header.check()
        if header.sender != sender:
            raise errors.PermissionDenied(f"site {sender} cannot send an envelope in the name of {header.sender!r}")
        if header.recipient == sender:
            raise errors.InvalidArgument("a site cannot send an envelope to itself")
        if not sealed_key or len(sealed_key) > MAX_SEALED_KEY_BYTES:
            raise errors.InvalidArgument(f"envelope {header.envelope_id} has no valid sealed key")
        if header.payload_size > self.config.max_envelope_bytes:
            raise errors.ResourceExhausted(
                f"envelope {header.envelope_id} holds {header.payload_size} bytes; the coordinator accepts at most "
                f"{self.config.max_envelope_bytes} (exchange.max_envelope_bytes)"
            )
        if header.ttl_s > self.config.max_ttl_s:
            raise errors.InvalidArgument(
                f"a time-to-live of {header.ttl_s} s is longer than the coordinator allows ({self.config.max_ttl_s} s)"
            )
        if header.created_at_ms / 1000 > now + CLOCK_SKEW_S:
            raise errors.InvalidArgument("the envelope is dated in the future; check the sending site's clock")
        if header.expires_at <= now:
            raise errors.FailedPrecondition(
                f"envelope {header.envelope_id} expired before it arrived (created {header.created_at_ms} ms, "
                f"ttl {header.ttl_s} s)"
            )
        if known_route:
            return
        self._agreements.check(sender, header.recipient, header.purpose)
        if header.recipient in self._revoked:
            raise errors.FailedPrecondition(f"site {header.recipient} has been revoked; nothing can be sent to it")
        self._keys.check_sealed_to(header.recipient, header.recipient_key_id, header.suite, now)
        if allowed is not None:
            allowed.add(route)

    def _try_reserve(self, sender: str, size: int) -> bool:
        """Reserve ``size`` bytes of the sender's quota if they fit."""
        with self._lock:
            used = self._pending.get(sender, 0) + self._reserved.get(sender, 0)
            if used + size > self.config.quota_bytes_per_site:
                return False
            self._reserved[sender] = self._reserved.get(sender, 0) + size
            return True

    def _reserve(self, sender: str, size: int) -> None:
        with self._lock:
            used = self._pending.get(sender, 0) + self._reserved.get(sender, 0)
            if used + size > self.config.quota_bytes_per_site:
                raise errors.ResourceExhausted(
                    f"site {sender} already has {used} bytes waiting at the coordinator; with {size} more it would "
                    f"exceed its quota of {self.config.quota_bytes_per_site} bytes "
                    "(exchange.quota_bytes_per_site): wait until recipients receive them"
                )
            self._reserved[sender] = self._reserved.get(sender, 0) + size

    def _release(self, sender: str, size: int, committed: bool = False) -> None:
        with self._lock:
            self._reserved[sender] = self._reserved.get(sender, 0) - size
            if committed:
                self._pending[sender] = self._pending.get(sender, 0) + size

    def _write_batch(self, batch: list[_Prepared]) -> _Written:
        """First stage of a commit, run while the batch before is being committed: the
        batch's bytes bound for a segment written and fdatasynced, and its rows made."""
        blobs = [p.segment_blob for p in batch if p.segment_blob is not None]
        if not blobs:
            return _Written(None, [p.record.row() for p in batch], [], 0, any(p.tmp_path for p in batch))
        try:
            number, offsets = self._segments.append(blobs)  # type: ignore[arg-type]
        except BaseException:
            self._settle(batch, [])
            raise
        segment_bytes = offsets[-1] - offsets[0] + len(blobs[-1])  # type: ignore[arg-type]
        at = iter(offsets)
        segment_rows = [
            (*p.row_head, number, next(at), len(p.record.sealed_key))  # type: ignore[arg-type]
            for p in batch
            if p.segment_blob is not None
        ]
        rows = [p.record.row() for p in batch if p.segment_blob is None]
        return _Written(number, rows, segment_rows, segment_bytes, any(p.tmp_path for p in batch))

    def _commit(self, batch: list[_Prepared], written: _Written) -> list[Receipt | errors.SiloError]:
        results: list[Receipt | errors.SiloError] = []
        fresh: list[_Prepared] = []
        try:
            self._store_fresh(batch, written, results, fresh)
        except BaseException:
            # Nothing was stored: drop files already moved in, free every reservation below.
            for p in fresh:
                if p.tmp_path is not None:
                    (self._blobs / p.record.header.envelope_id).unlink(missing_ok=True)
            fresh.clear()
            raise
        finally:
            if written.segment is not None:
                self._segments.settled(written.segment)
            self._settle(batch, fresh)
        return results

    def _store_fresh(
        self,
        batch: list[_Prepared],
        written: _Written,
        results: list[Receipt | errors.SiloError],
        fresh: list[_Prepared],
    ) -> None:
        """One transaction: the rows of the envelopes not already stored (their segment
        bytes already on disk), their audit entries."""
        if not written.files:
            # Resends are rare: insert everything, and only if some id was taken look
            # closer (the transaction is rolled back first).
            fresh.extend(batch)
            try:
                self._insert(fresh, written.rows, written.segment_rows, written.segment, written.segment_bytes)
            except _Resent:
                fresh.clear()
            else:
                results.extend(Receipt(p.record.header.envelope_id, False, p.record.expires_at) for p in batch)
                return
        # Only this thread adds envelopes, so what is known now is known at the insert too.
        known = self._store.envelopes_by_id([p.record.header.envelope_id for p in batch])
        plain, segmented = iter(written.rows), iter(written.segment_rows)
        rows, segment_rows, segment_bytes = [], [], 0
        for p in batch:
            in_segment = p.segment_blob is not None
            row = next(segmented) if in_segment else next(plain)
            header = p.record.header
            prior = known.get(header.envelope_id)
            if prior is not None:
                results.append(self._resent(prior, p.record))
                continue
            known[header.envelope_id] = p.record
            fresh.append(p)
            if in_segment:
                segment_rows.append(row)
                segment_bytes += len(p.segment_blob)  # type: ignore[arg-type]
            else:
                rows.append(row)
            results.append(Receipt(header.envelope_id, False, p.record.expires_at))
        if fresh:
            self._insert(fresh, rows, segment_rows, written.segment, segment_bytes)

    def _insert(
        self,
        fresh: list[_Prepared],
        rows: list[tuple],
        segment_rows: list[tuple],
        segment: int | None,
        segment_bytes: int,
    ) -> None:
        """Store ``fresh`` (none of them known yet) in one transaction; raise ``_Resent``
        (nothing stored) if an envelope id was taken after all."""
        counted = False
        try:
            with self._store.atomic():
                if self._store.insert_new_rows(rows, segment_rows) != len(fresh):
                    raise _Resent
                if rows and any(p.tmp_path is not None for p in fresh):
                    for p in fresh:
                        if p.tmp_path is not None:
                            os.replace(p.tmp_path, self._blobs / p.record.header.envelope_id)
                    _fsync_dir(self._blobs)
                senders = {p.sender.cert_fingerprint: p.sender for p in fresh}
                for fingerprint, sender in senders.items():
                    if fingerprint not in self._known_certs:
                        self._store.add_certificate(fingerprint, sender.cert_pem)
                self._audit.record_batch(send_entries((p.record, p.request) for p in fresh))
                if segment_rows:
                    self._segments.added(segment, len(segment_rows), segment_bytes)  # type: ignore[arg-type]
                    counted = True
        except BaseException:
            if counted:
                self._segments.added(segment, -len(segment_rows), -segment_bytes)  # type: ignore[arg-type]
            raise
        self._known_certs.update(senders)

    def _settle(self, batch: list[_Prepared], fresh: list[_Prepared]) -> None:
        """Turn the batch's reservations into pending bytes (stored) or free them."""
        fresh_ids = {id(p) for p in fresh}
        released: dict[str, int] = {}
        committed: dict[str, int] = {}
        for p in batch:
            sender, size = p.record.header.sender, p.record.ciphertext_size
            released[sender] = released.get(sender, 0) + size
            if id(p) in fresh_ids:
                committed[sender] = committed.get(sender, 0) + size
            elif p.tmp_path is not None:
                p.tmp_path.unlink(missing_ok=True)
        with self._lock:
            for sender, size in released.items():
                self._reserved[sender] = self._reserved.get(sender, 0) - size
            for sender, size in committed.items():
                self._pending[sender] = self._pending.get(sender, 0) + size
        if fresh:
            log.debug("committed %d envelopes", len(fresh))

    @staticmethod
    def _resent(prior: EnvelopeRecord, record: EnvelopeRecord) -> Receipt | errors.SiloError:
        envelope_id = record.header.envelope_id
        if prior.header != record.header or prior.signature != record.signature:
            return errors.AlreadyExists(f"envelope id {envelope_id} is already taken by another envelope")
        if prior.state == "pending":
            return Receipt(envelope_id, True, prior.expires_at)
        return errors.AlreadyExists(
            f"envelope {envelope_id} was already {prior.state}; an envelope is never delivered twice"
        )

    # -- receiving -------------------------------------------------------------------------
    def inbox(self, site: str) -> list[EnvelopeRecord]:
        return self._store.inbox(site, self._clock())

    def _pending_for(self, site: str, envelope_id: str, with_ciphertext: bool = False) -> EnvelopeRecord:
        record = self._store.get_envelope(envelope_id, with_ciphertext)
        if record is None or record.header.recipient != site:
            raise errors.NotFound(f"no envelope {envelope_id!r} for {site}; `edge-agent inbox` lists them")
        if record.state != "pending":
            raise errors.FailedPrecondition(
                f"envelope {envelope_id} was already {record.state}"
                + ("; ask the sender to send it again" if record.state == "expired" else "")
            )
        if record.expires_at <= self._clock():
            raise errors.FailedPrecondition(f"envelope {envelope_id} has expired")
        return record

    def fetch(self, site: str, envelope_id: str) -> tuple[EnvelopeRecord, str, Iterator[bytes]]:
        """The envelope, its sender's certificate, and its ciphertext in pieces."""
        record = self._pending_for(site, envelope_id, with_ciphertext=True)
        cert = self._store.certificate(record.sender_cert or "") or ""
        if record.segment is not None:
            data = self._segment_bytes(record)
            if data is None:  # moved into its row by the sweeper meanwhile?
                record = self._pending_for(site, envelope_id, with_ciphertext=True)
                data = self._segment_bytes(record) if record.segment is not None else None
            if data is not None:
                key_size = record.sealed_key_size or 0
                record = dataclasses.replace(record, sealed_key=data[:key_size])
                return record, cert, _pieces_of(data[key_size:])
        if record.segment is not None:
            raise errors.FailedPrecondition(f"envelope {envelope_id} is no longer available")
        if not record.in_file:
            return record, cert, _pieces_of(record.inline or b"")
        try:
            handle = open(self._blobs / envelope_id, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise errors.FailedPrecondition(f"envelope {envelope_id} is no longer available") from None
        return record, cert, _read_pieces(handle)

    def ack(self, site: str, envelope_id: str) -> None:
        """The recipient has the envelope: drop its ciphertext (idempotent)."""
        record = self._store.get_envelope(envelope_id)
        if record is None or record.header.recipient != site:
            raise errors.NotFound(f"no envelope {envelope_id!r} for {site}")
        if record.state != "pending":
            return
        with self._store.atomic():
            self._store.finish_envelope(envelope_id, "delivered", self._clock())
            self._audit.record(f"site:{site}", "envelope.deliver", envelope_id, sender=record.header.sender)
        self._forget(record)

    def _segment_bytes(self, record: EnvelopeRecord) -> bytes | None:
        size = (record.sealed_key_size or 0) + record.ciphertext_size
        return self._segments.read(record.segment, record.segment_offset or 0, size)  # type: ignore[arg-type]

    def _forget(self, record: EnvelopeRecord) -> None:
        if record.segment is not None:
            self._segments.released(record.segment, (record.sealed_key_size or 0) + record.ciphertext_size)
        if record.in_file:
            (self._blobs / record.header.envelope_id).unlink(missing_ok=True)
        with self._lock:
            sender = record.header.sender
            self._pending[sender] = self._pending.get(sender, 0) - record.ciphertext_size

    def pending_key_ids(self, site: str) -> set[str]:
        return self._store.pending_key_ids(site)

    # -- expiry ----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Drop expired envelopes and old tombstones; return how many envelopes expired."""
        now = self._clock()
        expired = self._store.expired(now)
        if expired:
            with self._store.atomic():
                for record in expired:
                    self._store.finish_envelope(record.header.envelope_id, "expired", now)
                self._audit.record_batch(
                    [
                        ("coordinator", "envelope.expire", r.header.envelope_id, {"recipient": r.header.recipient})
                        for r in expired
                    ]
                )
            for record in expired:
                self._forget(record)
            log.info("%d envelopes expired undelivered", len(expired))
        self._store.purge_tombstones(now - TOMBSTONE_S)
        self.compact_segments()
        return len(expired)

    def compact_segments(self, max_fill: float = SEGMENT_COMPACT_FILL) -> int:
        """Move the pending envelopes of mostly-empty segments into their rows and delete
        those segments, so a few undelivered envelopes cannot pin many megabytes."""
        moved = 0
        for number in self._segments.sparse(max_fill):
            for record in self._store.pending_in_segment(number):
                data = self._segment_bytes(record)
                if data is None:
                    log.error("segment %d lost envelope %s", number, record.header.envelope_id)
                    continue
                key_size = record.sealed_key_size or 0
                self._store.move_into_row(record.header.envelope_id, data[:key_size], data[key_size:])
                moved += 1
            self._segments.forget(number)
        if moved:
            log.info("moved %d envelopes out of sparse segments", moved)
        return moved

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the sweeper must keep running
                log.exception("sweeping expired envelopes failed")


def _pieces_of(data: bytes) -> Iterator[bytes]:
    return iter([data[i : i + READ_PIECE_BYTES] for i in range(0, len(data), READ_PIECE_BYTES)])


def _read_pieces(handle) -> Iterator[bytes]:
    with handle:
        while piece := handle.read(READ_PIECE_BYTES):
            yield piece


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
