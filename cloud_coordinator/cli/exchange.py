"""``agreements add | list | revoke`` and ``audit verify | list``."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import click

from silolink import errors, pki
from silolink.audit.pinned import HeadPin, verify_pinned
from silolink.audit.remote import fetch_all
from silolink.cli_util import echo_json, handle_errors, table
from silolink.exchange_protos import AGREEMENT_STATES, agreement_to_dict
from silolink.gen.audit.v1 import audit_pb2, audit_pb2_grpc
from silolink.gen.exchange.v1 import exchange_pb2, exchange_pb2_grpc

from ..operator_client import OperatorClient
from .options import json_option, operator_options


class ExchangeAdmin:
    """The operator's calls for agreements and the audit chain, over an OperatorClient's channel."""

    def __init__(self, client: OperatorClient) -> None:
        self._client = client
        self._admin = exchange_pb2_grpc.ExchangeAdminServiceStub(client.channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(client.channel)

    def add_agreement(self, sender: str, recipient: str, purpose: str, study: str = "") -> dict[str, Any]:
        request = exchange_pb2.CreateAgreementRequest(sender=sender, recipient=recipient, purpose=purpose, study=study)
        return agreement_to_dict(self._client.call(self._admin.CreateAgreement, request).agreement)

    def list_agreements(self) -> list[dict[str, Any]]:
        reply = self._client.call(self._admin.ListAgreements, exchange_pb2.ListAgreementsRequest())
        return [agreement_to_dict(a) for a in reply.agreements]

    def find_agreements(self, page_size: int, offset: int = 0, site: str = "", state: str = "") -> dict[str, Any]:
        """One page of the agreements (oldest first) matching the filters, and how many match."""
        request = exchange_pb2.ListAgreementsRequest(
            page_size=page_size, page_token=str(offset) if offset else "", site=site,
            state=AGREEMENT_STATES[state] if state else 0,
        )  # fmt: skip
        reply = self._client.call(self._admin.ListAgreements, request)
        return {"agreements": [agreement_to_dict(a) for a in reply.agreements], "total": reply.total_size}

    def revoke_agreement(self, agreement_id: str) -> dict[str, Any]:
        reply = self._client.call(self._admin.RevokeAgreement, exchange_pb2.RevokeAgreementRequest(id=agreement_id))
        return agreement_to_dict(reply.agreement)

    def list_queues(self) -> list[dict[str, Any]]:
        """Per site, the envelopes and ciphertext bytes waiting in the broker (never content)."""
        return self.find_queues(0)["queues"]

    def find_queues(self, page_size: int, site: str = "") -> dict[str, Any]:
        """The fullest ``page_size`` queues (0: every one, by site name) and the broker's totals."""
        reply = self._client.call(
            self._admin.ListQueues, exchange_pb2.ListQueuesRequest(page_size=page_size, site=site)
        )
        queues = [
            {
                "site": q.site,
                "inbound_envelopes": q.inbound_envelopes,
                "inbound_bytes": q.inbound_bytes,
                "outbound_envelopes": q.outbound_envelopes,
                "outbound_bytes": q.outbound_bytes,
            }
            for q in reply.queues
        ]
        return {"queues": queues, "sites": reply.total_sites, "envelopes": reply.total_envelopes,
                "bytes": reply.total_bytes}  # fmt: skip

    def audit_page(self, after_seq: int) -> audit_pb2.ListAuditEntriesResponse:
        return self._client.call(self._audit.ListAuditEntries, audit_pb2.ListAuditEntriesRequest(after_seq=after_seq))

    def verify_audit(self, pin_file: Path) -> dict[str, Any]:
        """Fetch the whole chain and verify it here, against the head and key pinned in ``pin_file``.

        The first verification pins the audit key and head; each later one refuses a chain
        under another key, or one that no longer holds the pinned head (entries deleted at
        the end, the table emptied, history rewritten), and moves the pin forward.
        """
        try:
            chain, before = verify_pinned(self.audit_page, HeadPin(pin_file), pinned_by="this operator machine")
        except errors.FailedPrecondition as e:
            raise errors.FailedPrecondition(f"{e.message} (head and key pinned in {pin_file})") from None
        return {
            "ok": True,
            "entries": len(chain.entries),
            "head_seq": chain.head_seq,
            "head_hash": chain.head_hash,
            "public_key": chain.public_key.hex(),
            "pin_file": str(pin_file),
            "first_pin": before is None,
            "pinned_seq_before": before.seq if before else None,
        }


def default_pin_file(client: OperatorClient) -> Path:
    """Where this operator account pins the audit head of the coordinator ``client`` reaches:
    one file per coordinator CA, in the user's state directory (not the coordinator's)."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    ca = pki.fingerprint(pki.load_cert(client.ca_pem)).removeprefix("sha256:").replace(":", "")
    return state / "silolink" / "audit-pins" / f"{ca[:32]}.json"


@click.group()
def agreements() -> None:
    """Create, list and revoke sharing agreements between sites."""


@agreements.command("add")
@click.option("--from", "sender", required=True, help="The sending site.")
@click.option("--to", "recipient", required=True, help="The receiving site (it must accept).")
@click.option("--purpose", required=True, help="What the data is for, e.g. referral or second-opinion.")
@click.option("--study", default="", help="The study the agreement belongs to; both sites must have accepted it.")
@json_option
@operator_options
@handle_errors
def add(client: OperatorClient, sender: str, recipient: str, purpose: str, study: str, as_json: bool) -> None:
    """Let one site send one purpose to another, once the receiving site accepts."""
    agreement = ExchangeAdmin(client).add_agreement(sender, recipient, purpose, study)
    if as_json:
        echo_json(agreement)
        return
    click.echo(f"agreement {agreement['id']} created: {sender} may send {purpose!r} to {recipient}")
    click.echo(f"pending until {recipient} accepts: edge-agent agreements accept {agreement['id']}")


@agreements.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """Show every agreement and its state."""
    found = ExchangeAdmin(client).list_agreements()
    if as_json:
        echo_json(found)
        return
    click.echo(
        table(
            ["ID", "FROM", "TO", "PURPOSE", "STATE", "CREATED"],
            [[a["id"], a["from"], a["to"], a["purpose"], a["state"], a["created_at"]] for a in found],
        )
    )


@agreements.command("revoke")
@click.argument("agreement_id")
@json_option
@operator_options
@handle_errors
def revoke(client: OperatorClient, agreement_id: str, as_json: bool) -> None:
    """End agreement AGREEMENT_ID; nothing more is accepted under it."""
    agreement = ExchangeAdmin(client).revoke_agreement(agreement_id)
    if as_json:
        echo_json(agreement)
    else:
        click.echo(f"agreement {agreement['id']} revoked")


@click.group()
def audit() -> None:
    """Inspect and verify the hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--pin-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SILOLINK_AUDIT_PIN_FILE",
    help="Where the audit key and head are pinned (default: one file per coordinator under "
    "$XDG_STATE_HOME/silolink/audit-pins/, ~/.local/state when unset).",
)
@json_option
@operator_options
@handle_errors
def verify(client: OperatorClient, pin_file: Path | None, as_json: bool) -> None:
    """Fetch the whole audit chain and check every link and signature here, and that the head
    and audit key pinned on this machine at the first verify are still in it."""
    result = ExchangeAdmin(client).verify_audit(pin_file or default_pin_file(client))
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"audit chain verified: {result['entries']} entries, head {result['head_seq']} {result['head_hash'][:16]}"
    )
    if result["first_pin"]:
        click.echo(f"pinned the audit key and head in {result['pin_file']}; later verifies must find them")
    else:
        click.echo(f"the head pinned before (entry {result['pinned_seq_before']}) is still in the chain")


@audit.command("list")
@click.option("--last", default=20, show_default=True, help="How many of the newest entries to show.")
@json_option
@operator_options
@handle_errors
def list_audit(client: OperatorClient, last: int, as_json: bool) -> None:
    """Show the newest audit entries."""
    admin = ExchangeAdmin(client)
    head = admin.audit_page(0).head_seq
    entries, _ = fetch_all(admin.audit_page, after_seq=max(0, head - last))
    rows = [
        {
            "seq": e.seq,
            "at": dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat(timespec="seconds"),
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "details": e.details,
        }
        for e in entries
    ]
    if as_json:
        echo_json(rows)
        return
    click.echo(table(["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT"], [[r[k] for k in list(r)[:5]] for r in rows]))
