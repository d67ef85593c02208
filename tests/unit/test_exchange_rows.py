"""The broker's two row shapes: a segment row binds fewer columns, the rest are literals."""

from __future__ import annotations

import dataclasses
import uuid

from cloud_coordinator.exchange import store
from cloud_coordinator.exchange.store import EnvelopeRecord, ExchangeStore
from silolink.db import open_database
from silolink.envelope import DEFAULT_SUITE, Header


def test_a_segment_row_stores_what_the_full_row_would():
    header = Header(str(uuid.uuid4()), "hospital-a", "hospital-b", "share", "k" * 16, DEFAULT_SUITE, 1, 3600, 1024)
    received = EnvelopeRecord.received(header, b"key", b"signature", "f" * 64, b"x" * 1040, 1764115200.5)
    in_segment = dataclasses.replace(
        received, sealed_key=None, inline=None, segment=3, segment_offset=4096, sealed_key_size=3
    )
    segment_row = (*received.segment_row_head(), 3, 4096, 3)
    assert len(segment_row) == len(store._SEGMENT_COLUMNS)
    assert dict(zip(store._SEGMENT_COLUMNS, segment_row, strict=True)) == {
        c: v for c, v in zip(store._COLUMNS, in_segment.row(), strict=True) if c in store._SEGMENT_COLUMNS
    }
    exchange = ExchangeStore(open_database(None))
    assert exchange.insert_new_rows([], [segment_row]) == 1
    stored = exchange.get_envelope(header.envelope_id)
    assert stored == dataclasses.replace(in_segment, inline=None)
