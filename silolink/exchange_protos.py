"""Conversions between envelope objects and their protobuf messages, for both sides."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from silolink.envelope import Header, PublishedKey, SealedEnvelope
from silolink.gen.exchange.v1 import exchange_pb2

AGREEMENT_STATES = {
    "pending": exchange_pb2.AGREEMENT_STATE_PENDING,
    "active": exchange_pb2.AGREEMENT_STATE_ACTIVE,
    "revoked": exchange_pb2.AGREEMENT_STATE_REVOKED,
}
AGREEMENT_STATE_NAMES = {v: k for k, v in AGREEMENT_STATES.items()}


_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(Header))
_header_values = operator.attrgetter(*_HEADER_FIELDS)
# Envelopes with at most this much ciphertext travel whole, many to a request; larger ones
# travel in parts. Requests of whole envelopes are cut at WHOLE_BATCH_BYTES or
# WHOLE_BATCH_MAX envelopes, well under any message size limit.
WHOLE_MAX_BYTES = 64 * 1024
WHOLE_BATCH_BYTES = 1024 * 1024
WHOLE_BATCH_MAX = 256


def header_to_proto(header: Header) -> exchange_pb2.EnvelopeHeader:
    return exchange_pb2.EnvelopeHeader(**{name: getattr(header, name) for name in _HEADER_FIELDS})


def header_from_proto(message: exchange_pb2.EnvelopeHeader) -> Header:
    return Header(*_header_values(message))


def whole_to_proto(item: SealedEnvelope) -> exchange_pb2.WholeEnvelope:
    return exchange_pb2.WholeEnvelope(
        header=header_to_proto(item.header),
        sealed_key=item.sealed_key,
        ciphertext=b"".join(item.chunks),
        signature=item.signature,
    )


def upload_requests(
    envelopes: Iterable[SealedEnvelope],
    batch_bytes: int = WHOLE_BATCH_BYTES,
    batch_max: int = WHOLE_BATCH_MAX,
) -> Iterator[exchange_pb2.SendEnvelopesRequest]:
    """SendEnvelopes requests for sealed envelopes: small ones whole, many to a request;
    larger ones in parts, a chunk per request."""
    batch: list[exchange_pb2.WholeEnvelope] = []
    size = 0
    for item in envelopes:
        if item.header.ciphertext_size <= WHOLE_MAX_BYTES:
            batch.append(whole_to_proto(item))
            size += item.header.ciphertext_size + len(item.sealed_key)
            if size >= batch_bytes or len(batch) >= batch_max:
                yield exchange_pb2.SendEnvelopesRequest(envelopes=batch)
                batch, size = [], 0
            continue
        if batch:
            yield exchange_pb2.SendEnvelopesRequest(envelopes=batch)
            batch, size = [], 0
        last = len(item.chunks) - 1
        for i, chunk in enumerate(item.chunks):
            request = exchange_pb2.SendEnvelopesRequest(chunks=[chunk])
            if i == 0:
                request.header.CopyFrom(header_to_proto(item.header))
                request.sealed_key = item.sealed_key
            if i == last:
                request.signature = item.signature
            yield request
    if batch:
        yield exchange_pb2.SendEnvelopesRequest(envelopes=batch)


def key_to_proto(key: PublishedKey) -> exchange_pb2.SiteKey:
    return exchange_pb2.SiteKey(
        site=key.site,
        suite=key.suite,
        key_id=key.key_id,
        public_key=key.public_bytes,
        created_at_ms=key.created_at_ms,
        signature=key.signature,
    )


def key_from_proto(message: exchange_pb2.SiteKey) -> PublishedKey:
    return PublishedKey(
        site=message.site,
        suite=message.suite,
        key_id=message.key_id,
        public_bytes=message.public_key,
        created_at_ms=message.created_at_ms,
        signature=message.signature,
    )


def agreement_to_dict(message: exchange_pb2.Agreement) -> dict[str, Any]:
    from silolink.cli_util import iso
    from silolink.protos import epoch

    return {
        "id": message.id,
        "from": message.sender,
        "to": message.recipient,
        "purpose": message.purpose,
        "state": AGREEMENT_STATE_NAMES.get(message.state, "unknown"),
        "created_at": iso(epoch(message, "created_at")),
        "accepted_at": iso(epoch(message, "accepted_at")),
        "created_by": message.created_by,
        "study": message.study or "default",
    }


def inbox_entry_to_dict(entry: exchange_pb2.InboxEntry) -> dict[str, Any]:
    from silolink.cli_util import iso
    from silolink.protos import epoch

    h = entry.header
    return {
        "envelope_id": h.envelope_id,
        "from": h.sender,
        "purpose": h.purpose,
        "size": h.payload_size,
        "suite": h.suite,
        "received_at": iso(epoch(entry, "received_at")),
        "expires_at": iso(epoch(entry, "expires_at")),
    }
