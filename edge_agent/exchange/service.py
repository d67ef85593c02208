"""The site's side of exchange: keys, sending under the site's policy, receiving with every
check, agreements. Plain logic; the coordinator is reached through ``CoordinatorExchange``."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from silolink import errors, pki
from silolink.config import AgentExchangeConfig
from silolink.envelope import DEFAULT_CHUNK_SIZE, Header, Opener, PublishedKey, Sealer, split_ciphertext
from silolink.envelope import validate_purpose as check_purpose
from silolink.exchange_protos import header_from_proto, header_to_proto, key_from_proto, key_to_proto
from silolink.gen.exchange.v1 import exchange_pb2
from silolink.identity import Role, validate_site_name

from .keys import KeyRing, StoredKey
from .remote import CoordinatorExchange
from .store import Received, SiteExchangeStore

log = logging.getLogger(__name__)
CLOCK_SKEW_S = 300.0
# Sealed envelopes up to this size are kept in memory so a broken upload can be resent
# with the same id (the coordinator then deduplicates it); larger ones are sent once.
RETRY_MAX_BYTES = 16 * 1024 * 1024
SEND_ATTEMPTS = 3


@dataclass(frozen=True)
class SendResult:
    envelope_id: str
    size: int
    suite: str
    expires_at: float


@dataclass(frozen=True)
class ReceiveResult:
    envelope_id: str
    sender: str
    purpose: str
    path: str
    size: int
    sha256: str
    duplicate: bool


class SiteExchange:
    def __init__(
        self,
        site: str,
        config: AgentExchangeConfig,
        remote: CoordinatorExchange,
        keys: KeyRing,
        store: SiteExchangeStore,
        inbox_dir: Path,
        published_marker: Path,
    ) -> None:
        self.site = site
        self.config = config
        self.studies = None  # edge_agent.studies.gate.StudyGate, set by attach: which studies the site is in
        self._remote = remote
        self.keys = keys
        self._store = store
        self._inbox = inbox_dir
        self._published_marker = published_marker

    # -- keys ------------------------------------------------------------------------------
    def publish_key(self, force: bool = False) -> bool:
        """Publish the current key, signed with the site key, if the coordinator may lack it
        (new key, or a renewed certificate). Returns True if it was sent."""
        key = self.keys.current(self.config.suite)
        identity = self._remote.identity()
        marker = f"{key.key_id} {format(identity.cert.serial_number, 'x')}"
        if not force and self._published_marker.exists() and self._published_marker.read_text() == marker:
            return False
        self._remote.publish_key(key_to_proto(key.published(self.site).signed(identity.key)))
        self._published_marker.write_text(marker)
        return True

    def rotate_key(self, suite: str = "") -> StoredKey:
        key = self.keys.rotate(suite or self.config.suite)
        self.publish_key(force=True)
        log.info("rotated to exchange key %s (%s)", key.key_id, key.pair.suite)
        return key

    def published_key_id(self) -> str:
        if not self._published_marker.exists():
            return ""
        return self._published_marker.read_text().split()[0]

    def prune_keys(self) -> list[str]:
        in_use = {e.header.recipient_key_id for e in self._remote.inbox()}
        return self.keys.prune(self.config.key_retention_s, in_use)

    # -- checks on the coordinator's word ---------------------------------------------------
    def _site_certificate(self, pem: str, site: str, at: float | None = None) -> x509.Certificate:
        """``pem`` must be a certificate our pinned CA issued to ``site`` (valid at ``at``)."""
        try:
            cert = pki.load_cert(pem.encode())
        except errors.InvalidArgument:
            raise errors.PermissionDenied(f"the coordinator sent no valid certificate for site {site}") from None
        ca = pki.load_cert(self._remote.identity().ca_pem)
        identity = pki.identity_of(cert)
        if not pki.issued_by(cert, ca) or identity is None or identity.role is not Role.AGENT or identity.name != site:
            raise errors.PermissionDenied(
                f"the certificate offered for site {site} is not one our CA issued to that site; refusing it"
            )
        if at is not None:
            moment = dt.datetime.fromtimestamp(at, dt.UTC)
            skew = dt.timedelta(seconds=CLOCK_SKEW_S)
            if not cert.not_valid_before_utc - skew <= moment <= cert.not_valid_after_utc + skew:
                raise errors.PermissionDenied(f"site {site}'s certificate was not valid when the envelope was sealed")
        return cert

    def recipient_key(self, recipient: str) -> PublishedKey:
        reply = self._remote.site_key(recipient)
        key = key_from_proto(reply.key)
        if key.site != recipient:
            raise errors.PermissionDenied(f"the coordinator returned a key of {key.site!r} for {recipient}")
        key.verify(self._site_certificate(reply.certificate_pem, recipient).public_key())  # type: ignore[arg-type]
        return key

    # -- sending ---------------------------------------------------------------------------
    def check_policy(self, recipient: str, purpose: str) -> None:
        if self.config.allowed_recipients and recipient not in self.config.allowed_recipients:
            raise errors.PermissionDenied(
                f"this site's policy does not allow sending to {recipient} (agent.toml [exchange] allowed_recipients)"
            )
        if self.config.allowed_purposes and purpose not in self.config.allowed_purposes:
            raise errors.PermissionDenied(
                f"this site's policy does not allow sending for purpose {purpose!r} "
                "(agent.toml [exchange] allowed_purposes)"
            )

    def send_file(self, path: str, recipient: str, purpose: str, ttl_s: int = 0) -> SendResult:
        validate_site_name(recipient)
        check_purpose(purpose)
        self.check_policy(recipient, purpose)
        source = Path(path)
        if not source.is_absolute():
            raise errors.InvalidArgument(f"{path!r} is not an absolute path on the agent's host")
        try:
            handle = source.open("rb")
        except FileNotFoundError:
            raise errors.NotFound(f"no file at {path} on the agent's host") from None
        except (IsADirectoryError, PermissionError) as e:
            raise errors.InvalidArgument(f"the agent cannot read {path}: {e.strerror}") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            key = self.recipient_key(recipient)
            header = Header.new(self.site, recipient, purpose, key, size, ttl_s or self.config.ttl_s)
            sealer = Sealer(header, key, self._remote.identity().key, source.name)
            requests = _upload_requests(header, sealer, handle)
            if header.ciphertext_size <= RETRY_MAX_BYTES:
                requests = list(requests)  # sealed once, resendable as is
            receipt = self._upload(header.envelope_id, requests)
        log.info("sent envelope %s to %s (%s, %d bytes)", header.envelope_id, recipient, purpose, size)
        return SendResult(header.envelope_id, size, header.suite, receipt.expires_at.ToNanoseconds() / 1e9)

    def _upload(self, envelope_id: str, requests) -> exchange_pb2.EnvelopeReceipt:
        attempts = SEND_ATTEMPTS if isinstance(requests, list) else 1
        for attempt in range(1, attempts + 1):
            try:
                for receipt in self._remote.send(requests):
                    if receipt.envelope_id == envelope_id:
                        return receipt
                raise errors.Unavailable("the coordinator closed the upload without a receipt")
            except errors.Unavailable:
                if attempt == attempts:
                    raise
                log.warning("upload of envelope %s interrupted; resending it (attempt %d)", envelope_id, attempt + 1)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    # -- receiving -------------------------------------------------------------------------
    def inbox(self) -> list[exchange_pb2.InboxEntry]:
        return self._remote.inbox()

    def receive(self, envelope_id: str, output_path: str = "") -> ReceiveResult:
        earlier = self._store.received(envelope_id)
        if earlier is not None and Path(earlier.path).exists():
            # Redelivered (our ack was lost, or the coordinator replays it): never written twice.
            self._ack_quietly(envelope_id)
            return ReceiveResult(
                envelope_id, earlier.sender, earlier.purpose, earlier.path, earlier.size, earlier.sha256, True
            )
        stream = self._remote.fetch(envelope_id)
        first = next(stream, None)
        if first is None or not first.HasField("envelope"):
            raise errors.Unavailable("the coordinator sent no envelope")
        stored = first.envelope
        header = header_from_proto(stored.header)
        if header.envelope_id != envelope_id:
            raise errors.PermissionDenied(f"the coordinator sent envelope {header.envelope_id} for {envelope_id}")
        if header.recipient != self.site:
            raise errors.PermissionDenied(
                f"envelope {envelope_id} is addressed to {header.recipient}, not to this site"
            )
        if header.expires_at < time.time() - CLOCK_SKEW_S:
            raise errors.FailedPrecondition(f"envelope {envelope_id} expired; it is not opened")
        if not self._store.accepted(header.sender, header.purpose):
            raise errors.PermissionDenied(
                f"this site has accepted no agreement to receive {header.purpose!r} from {header.sender}"
            )
        if self.studies is not None:
            self.studies.check_envelope(header.sender, header.purpose)
        cert = self._site_certificate(stored.sender_certificate_pem, header.sender, header.created_at_ms / 1000)
        opener = Opener(header, stored.sealed_key, self.keys.get(header.recipient_key_id))
        target_dir, final_name = self._target(envelope_id, opener.filename, output_path)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".receiving-")
        try:
            with os.fdopen(fd, "wb") as out:
                pieces = (piece for message in stream for piece in message.chunks)
                for index, chunk in enumerate(split_ciphertext(header, pieces)):
                    plaintext = opener.open(index, chunk)
                    digest.update(plaintext)
                    out.write(plaintext)
                opener.finish(stored.signature, cert.public_key())  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
            final = target_dir / final_name
            os.replace(tmp, final)
            _fsync_dir(target_dir)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        result = ReceiveResult(
            envelope_id, header.sender, header.purpose, str(final), header.payload_size, digest.hexdigest(), False
        )
        self._store.record_received(
            Received(
                envelope_id, header.sender, header.purpose, str(final), header.payload_size, result.sha256, time.time()
            )
        )
        self._remote.ack(envelope_id)
        log.info("received envelope %s from %s (%s, %d bytes)", envelope_id, header.sender, header.purpose, result.size)
        return result

    def _target(self, envelope_id: str, filename: str, output_path: str) -> tuple[Path, str]:
        if output_path:
            out = Path(output_path)
            if not out.is_absolute():
                raise errors.InvalidArgument(f"{output_path!r} is not an absolute path on the agent's host")
            if not out.parent.is_dir():
                raise errors.NotFound(f"no folder {out.parent} on the agent's host")
            return out.parent, out.name
        self._inbox.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name).lstrip(".") or "payload"
        return self._inbox, f"{envelope_id[:8]}-{safe}"

    def _ack_quietly(self, envelope_id: str) -> None:
        try:
            self._remote.ack(envelope_id)
        except errors.SiloError as e:
            log.info("re-acknowledging envelope %s: %s", envelope_id, e.message)

    # -- agreements ------------------------------------------------------------------------
    def agreements(self) -> list[exchange_pb2.Agreement]:
        return self._remote.agreements()

    def accept(self, agreement_id: str) -> exchange_pb2.Agreement:
        if self.studies is not None:  # the agreement's study must be one this site is in, before it accepts
            offered = {a.id: a for a in self._remote.agreements()}.get(agreement_id)
            if offered is not None and offered.recipient == self.site:
                self.studies.accept_agreement(agreement_id, offered.sender, offered.purpose, offered.study)
        agreement = self._remote.accept(agreement_id)
        if agreement.recipient != self.site:
            raise errors.PermissionDenied(f"agreement {agreement_id} is not addressed to this site")
        self._store.accept(agreement.id, agreement.sender, agreement.purpose, time.time())
        return agreement


def _upload_requests(header: Header, sealer: Sealer, handle) -> Iterator[exchange_pb2.SendEnvelopesRequest]:
    """Header and wrapped key with the first chunk, a chunk per request, the signature last."""
    for index in range(header.chunk_count):
        plaintext = handle.read(header.chunk_plain_size(index))
        if len(plaintext) != header.chunk_plain_size(index):
            raise errors.FailedPrecondition("the file changed size while it was being sent")
        request = exchange_pb2.SendEnvelopesRequest(chunks=[sealer.seal(index, plaintext)])
        if index == 0:
            request.header.CopyFrom(header_to_proto(header))
            request.sealed_key = sealer.sealed_key
        if index == header.chunk_count - 1:
            request.signature = sealer.finish()
        yield request


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["DEFAULT_CHUNK_SIZE", "ReceiveResult", "SendResult", "SiteExchange"]
