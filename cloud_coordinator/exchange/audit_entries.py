"""How stored envelopes appear in the audit log.

One entry per upload request: an envelope that came on its own gets an ``envelope.send``
entry naming it; a request of several whole envelopes gets one ``envelope.send.batch``
entry listing every one of them (id and ciphertext bytes, grouped by recipient, purpose
and key). Either way every envelope id is inside an entry that the hash chain and the
coordinator's signature cover; one entry per batch instead of one per envelope is what
lets thousands of envelopes a second be recorded. ``envelope_ids`` reads both forms back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from silolink.audit.chain import AuditEntry

from .store import EnvelopeRecord

SEND = "envelope.send"
SEND_BATCH = "envelope.send.batch"

AuditItem = tuple[str, str, str, dict[str, Any]]


def send_entries(records: Iterable[tuple[EnvelopeRecord, object]]) -> list[AuditItem]:
    """The ``(actor, action, subject, details)`` items recording newly stored envelopes,
    given as ``(record, request)`` pairs: envelopes of one request share one entry."""
    by_request: dict[object, list[EnvelopeRecord]] = {}
    for record, request in records:
        by_request.setdefault(request, []).append(record)
    items: list[AuditItem] = []
    for mine in by_request.values():
        sender = mine[0].header.sender
        if len(mine) == 1:
            h = mine[0].header
            details = {
                "recipient": h.recipient,
                "purpose": h.purpose,
                "bytes": mine[0].ciphertext_size,
                "key_id": h.recipient_key_id,
            }
            items.append((f"site:{sender}", SEND, h.envelope_id, details))
            continue
        groups: dict[tuple[str, str, str], list[list[Any]]] = {}
        for r in mine:
            h = r.header
            groups.setdefault((h.recipient, h.purpose, h.recipient_key_id), []).append(
                [h.envelope_id, r.ciphertext_size]
            )
        details = {
            "count": len(mine),
            "bytes": sum(r.ciphertext_size for r in mine),
            "groups": [
                {"recipient": recipient, "purpose": purpose, "key_id": key_id, "envelopes": envelopes}
                for (recipient, purpose, key_id), envelopes in groups.items()
            ],
        }
        items.append((f"site:{sender}", SEND_BATCH, f"{len(mine)} envelopes", details))
    return items


def envelope_ids(entry: AuditEntry) -> list[str]:
    """The ids of the envelopes an ``envelope.send`` or ``envelope.send.batch`` entry records."""
    if entry.action == SEND:
        return [entry.subject]
    if entry.action == SEND_BATCH:
        return [envelope_id for group in entry.details["groups"] for envelope_id, _ in group["envelopes"]]
    return []
