"""``send``, ``inbox``, ``receive``, ``agreements list | accept``, ``keys list | rotate``,
``audit verify``: talk to the running agent, which talks to the coordinator."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, parse_duration_s, table

from ..client import LocalClient
from ..exchange.client import LocalExchangeClient
from .options import data_dir_option, json_option


def _client(data_dir: Path) -> tuple[LocalClient, LocalExchangeClient]:
    local = LocalClient.for_data_dir(data_dir)
    return local, LocalExchangeClient(local)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "recipient", required=True, help="The receiving site.")
@click.option("--purpose", required=True, help="The purpose; an accepted agreement must allow it.")
@click.option("--ttl", default=None, help="How long it may wait for the recipient (e.g. 24h; default agent.toml).")
@data_dir_option
@json_option
@handle_errors
def send(file: Path, recipient: str, purpose: str, ttl: str | None, data_dir: Path, as_json: bool) -> None:
    """Seal FILE to another site and hand it to the coordinator (returns once stored)."""
    local, client = _client(data_dir)
    with local:
        result = client.send(file, recipient, purpose, parse_duration_s(ttl) if ttl else 0)
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"sent {file.name} ({result['size']} bytes) to {recipient} for {purpose!r}: envelope {result['envelope_id']}"
    )
    click.echo(f"sealed with {result['suite']}; the coordinator keeps it until {result['expires_at']}")


@click.command()
@data_dir_option
@json_option
@handle_errors
def inbox(data_dir: Path, as_json: bool) -> None:
    """List the envelopes waiting for this site."""
    local, client = _client(data_dir)
    with local:
        entries = client.inbox()
    if as_json:
        echo_json(entries)
        return
    click.echo(
        table(
            ["ENVELOPE", "FROM", "PURPOSE", "BYTES", "RECEIVED", "EXPIRES"],
            [
                [e["envelope_id"], e["from"], e["purpose"], e["size"], e["received_at"], e["expires_at"]]
                for e in entries
            ],
        )
    )


@click.command()
@click.argument("envelope_id")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of the inbox folder."
)
@data_dir_option
@json_option
@handle_errors
def receive(envelope_id: str, output: Path | None, data_dir: Path, as_json: bool) -> None:
    """Download, verify and open ENVELOPE_ID, store it, then acknowledge it."""
    local, client = _client(data_dir)
    with local:
        result = client.receive(envelope_id, output)
    if as_json:
        echo_json(result)
        return
    again = " (received before)" if result["duplicate"] else ""
    click.echo(f"received {result['size']} bytes from {result['from']} for {result['purpose']!r}{again}")
    click.echo(f"  verified sender signature; sha256 {result['sha256']}")
    click.echo(f"  written to {result['path']}")


@click.group()
def agreements() -> None:
    """See and accept the sharing agreements this site is part of."""


@agreements.command("list")
@data_dir_option
@json_option
@handle_errors
def agreements_list(data_dir: Path, as_json: bool) -> None:
    """List the agreements this site sends or receives under."""
    local, client = _client(data_dir)
    with local:
        found = client.agreements()
    if as_json:
        echo_json(found)
        return
    click.echo(
        table(
            ["ID", "FROM", "TO", "PURPOSE", "STATE"],
            [[a["id"], a["from"], a["to"], a["purpose"], a["state"]] for a in found],
        )
    )


@agreements.command("accept")
@click.argument("agreement_id")
@data_dir_option
@json_option
@handle_errors
def agreements_accept(agreement_id: str, data_dir: Path, as_json: bool) -> None:
    """Accept agreement AGREEMENT_ID in this site's name."""
    local, client = _client(data_dir)
    with local:
        agreement = client.accept(agreement_id)
    if as_json:
        echo_json(agreement)
        return
    click.echo(f"accepted {agreement['id']}: {agreement['from']} may now send {agreement['purpose']!r} to this site")


@click.group()
def keys() -> None:
    """This site's HPKE keys for receiving envelopes."""


@keys.command("list")
@data_dir_option
@json_option
@handle_errors
def keys_list(data_dir: Path, as_json: bool) -> None:
    """List this site's keys (public halves; private keys never leave the agent)."""
    local, client = _client(data_dir)
    with local:
        found = client.keys()
    if as_json:
        echo_json(found)
        return
    click.echo(
        table(
            ["KEY", "SUITE", "CREATED", "CURRENT"],
            [[k["key_id"], k["suite"], k["created_at"], "yes" if k["current"] else ""] for k in found],
        )
    )


@keys.command("rotate")
@click.option("--suite", type=click.Choice(["MLKEM768_X25519", "X25519"]), help="Suite of the new key.")
@data_dir_option
@json_option
@handle_errors
def keys_rotate(suite: str | None, data_dir: Path, as_json: bool) -> None:
    """Make and publish a new key; the old one opens envelopes already sealed to it."""
    local, client = _client(data_dir)
    with local:
        key = client.rotate_key(suite or "")
    if as_json:
        echo_json(key)
    else:
        click.echo(f"new key {key['key_id']} ({key['suite']}) published")


@click.group()
def audit() -> None:
    """Check the coordinator's audit chain from this site."""


@audit.command("verify")
@data_dir_option
@json_option
@handle_errors
def audit_verify(data_dir: Path, as_json: bool) -> None:
    """Fetch the whole chain, check links and signatures, and that the head this site saw is in it."""
    local, client = _client(data_dir)
    with local:
        result = client.verify_audit()
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"audit chain verified: {result['entries']} entries, head {result['head_seq']} {result['head_hash'][:16]}; "
        f"the head this site saw before (entry {result['remembered_seq']}) is intact"
    )
