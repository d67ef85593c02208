"""``sites add | list | show | revoke | datasets``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

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


@sites.command("show")
@click.argument("name")
@click.option(
    "--samples",
    default=10,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="How many of the latest resource samples to print (the coordinator keeps [sites] resource_samples).",
)
@json_option
@operator_options
@handle_errors
def show(client: OperatorClient, name: str, samples: int, as_json: bool) -> None:
    """Show site NAME: state, version, certificate, and its resources over time."""
    site = client.get_site(name)
    if as_json:
        echo_json(site)
        return
    now = time.time()
    beat = datetime.fromisoformat(site["last_heartbeat"]).timestamp() if site["last_heartbeat"] else None
    res = site["resources"]
    click.echo(f"site {site['name']} ({site['kind']}): {site['state']}, agent {site['version'] or '-'}")
    click.echo(f"  last heartbeat:       {ago(beat, now)}")
    click.echo(f"  certificate expires:  {site['certificate_expires_at'] or '-'}")
    click.echo(f"  tags:                 {','.join(f'{k}={v}' for k, v in site['tags'].items()) or '-'}")
    click.echo(
        f"  now: {res['cpu_count']} CPUs, load {res['load_average_1m']}, "
        f"{_gib(res['memory_available_bytes'])} of {_gib(res['memory_total_bytes'])} memory free, "
        f"{_gib(res['disk_free_bytes'])} disk free"
    )
    history = site["history"]
    interval = site["history_interval_s"]
    click.echo(
        f"  resources over time: {len(history)} sample{'' if len(history) == 1 else 's'}, "
        f"one per {interval:g} s (up to {site['history_capacity']} kept)"
    )
    if history and samples:
        rows = [
            [
                datetime.fromtimestamp(h["at"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                f"{h['load_average_1m']:.2f}",
                _percent_used(h),
                _gib(h["memory_available_bytes"]),
                _gib(h["disk_free_bytes"]),
            ]
            for h in history[-samples:]
        ]
        click.echo(table(["TIME (UTC)", "LOAD", "MEM USED", "MEM FREE", "DISK FREE"], rows))


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"


def _percent_used(sample: dict) -> str:
    total = sample["memory_total_bytes"]
    return f"{(total - sample['memory_available_bytes']) / total * 100:.0f}%" if total else "-"


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
