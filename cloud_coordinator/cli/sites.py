"""``sites add | list | revoke | datasets``."""

from __future__ import annotations

import time

import click

from silolink.cli_util import ago, echo_json, handle_errors, parse_duration_s, parse_tags, table

from ..operator_client import OperatorClient
from .options import json_option, operator_options


@click.group()
def sites() -> None:
    """Add, list and revoke sites."""


@sites.command("add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["hospital", "factory"]), help="What the site is.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A label for targeting (repeatable).")
@click.option("--token-ttl", default="24h", show_default=True, help="How long the enrollment token stays valid.")
@json_option
@operator_options
@handle_errors
def add(client: OperatorClient, name: str, kind: str, tags: tuple[str, ...], token_ttl: str, as_json: bool) -> None:
    """Register site NAME and print its one-time enrollment token."""
    result = client.add_site(name, kind, parse_tags(tags), parse_duration_s(token_ttl))
    if as_json:
        echo_json(result)
        return
    click.echo(f"site {result['site']} added ({kind}); its token is shown once, expires {result['expires_at']}")
    click.echo(f"  token:           {result['token']}")
    click.echo(f"  CA fingerprint:  {result['ca_fingerprint']}")
    click.echo("on the site's host, run:")
    click.echo(f"  {enroll_command(result)} --data-dir /var/lib/silolink")


def enroll_command(result: dict) -> str:
    """The exact ``edge-agent enroll`` line for an added site, with both addresses."""
    return (
        f"edge-agent enroll --coordinator {result['coordinator_address']} "
        f"--enroll-address {result['enroll_address']} --token {result['token']} "
        f"--ca-fingerprint {result['ca_fingerprint']}"
    )


@sites.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """Show every site's state, last heartbeat and version."""
    found = client.list_sites()
    if as_json:
        echo_json(found)
        return
    now = time.time()
    from datetime import datetime

    def since(iso_ts: str | None) -> str:
        return ago(datetime.fromisoformat(iso_ts).timestamp() if iso_ts else None, now)

    click.echo(
        table(
            ["SITE", "KIND", "STATE", "LAST HEARTBEAT", "VERSION", "TAGS"],
            [
                [
                    s["name"],
                    s["kind"],
                    s["state"],
                    since(s["last_heartbeat"]),
                    s["version"],
                    ",".join(f"{k}={v}" for k, v in s["tags"].items()),
                ]
                for s in found
            ],
        )
    )


@sites.command("revoke")
@click.argument("name")
@json_option
@operator_options
@handle_errors
def revoke(client: OperatorClient, name: str, as_json: bool) -> None:
    """Cut site NAME off at once: its certificates are refused and its stream closed."""
    site = client.revoke_site(name)
    if as_json:
        echo_json(site)
    else:
        click.echo(f"site {site['name']} revoked")


@sites.command()
@click.argument("name")
@json_option
@operator_options
@handle_errors
def datasets(client: OperatorClient, name: str, as_json: bool) -> None:
    """Ask site NAME which datasets it holds; it answers as far as its policy allows."""
    answer = client.list_site_datasets(name)
    if as_json:
        echo_json(answer)
        return
    click.echo(f"site {answer['site']} shares: {answer['share']}")
    rows = [
        [
            d["name"],
            ", ".join(f"{c['name']}:{c['type']}" for c in d["columns"][:4]) + (" ..." if len(d["columns"]) > 4 else "")
            if "columns" in d
            else None,
            d.get("label"),
            d.get("row_count"),
        ]
        for d in answer["datasets"]
    ]
    click.echo(table(["DATASET", "COLUMNS", "LABEL", "ROWS"], rows))
