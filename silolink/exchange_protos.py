"""Conversions between envelope objects and their protobuf messages, for both sides."""

from __future__ import annotations

import dataclasses
from typing import Any

from silolink.envelope import Header, PublishedKey
from silolink.gen.exchange.v1 import exchange_pb2

AGREEMENT_STATES = {
    "pending": exchange_pb2.AGREEMENT_STATE_PENDING,
    "active": exchange_pb2.AGREEMENT_STATE_ACTIVE,
    "revoked": exchange_pb2.AGREEMENT_STATE_REVOKED,
}
AGREEMENT_STATE_NAMES = {v: k for k, v in AGREEMENT_STATES.items()}


def header_to_proto(header: Header) -> exchange_pb2.EnvelopeHeader:
    return exchange_pb2.EnvelopeHeader(**dataclasses.asdict(header))


def header_from_proto(message: exchange_pb2.EnvelopeHeader) -> Header:
    return Header(**{f.name: getattr(message, f.name) for f in dataclasses.fields(Header)})


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
