"""The demo's steps: sealed files between sites, and the audit chain."""

from __future__ import annotations

from pathlib import Path

import click

from ..world import DemoWorld, say


def exchange_sealed_file(world: DemoWorld) -> None:
    """Send a sealed file from one hospital to the other under an agreement."""
    from cloud_coordinator.cli.exchange import ExchangeAdmin
    from edge_agent.client import LocalClient
    from edge_agent.exchange.client import LocalExchangeClient

    a_dir, b_dir = world.sites["hospital-a"]["data_dir"], world.sites["hospital-b"]["data_dir"]
    say("cloud-coordinator agreements add --from hospital-a --to hospital-b --purpose referral")
    agreement = ExchangeAdmin(world.operator()).add_agreement("hospital-a", "hospital-b", "referral")
    click.echo(f"  {agreement['id']}: pending until hospital-b accepts")
    with LocalClient.for_data_dir(a_dir) as a_local, LocalClient.for_data_dir(b_dir) as b_local:
        site_a, site_b = LocalExchangeClient(a_local), LocalExchangeClient(b_local)
        say(f"edge-agent agreements accept {agreement['id']} --data-dir {b_dir}")
        site_b.accept(agreement["id"])
        world.wait_until(lambda: any(k["published"] for k in site_b.keys()), 15, "hospital-b's exchange key")
        letter = a_dir / "referral-letter.txt"
        letter.write_text("Referral: patient 4411, suspected malignancy; scans attached in PACS study 9.\n")
        say(f"edge-agent send --to hospital-b --purpose referral {letter} --data-dir {a_dir}")
        sent = site_a.send(letter, "hospital-b", "referral")
        click.echo(f"  envelope {sent['envelope_id']} sealed with {sent['suite']}, stored by the coordinator")
        say(f"edge-agent inbox --data-dir {b_dir}")
        for entry in site_b.inbox():
            click.echo(f"  {entry['envelope_id']}  from {entry['from']}  {entry['purpose']}  {entry['size']} bytes")
        say(f"edge-agent receive {sent['envelope_id']} --data-dir {b_dir}")
        got = site_b.receive(sent["envelope_id"])
    same = Path(got["path"]).read_bytes() == letter.read_bytes()
    click.echo(f"  signature verified, opened, written to {got['path']} (identical: {same}); ciphertext deleted")
    if not same:
        raise RuntimeError("the received file differs from the sent one")


def verify_audit_chain(world: DemoWorld) -> None:
    """Verify the audit chain, from the operator's side and from each hospital's."""
    from cloud_coordinator.cli.exchange import ExchangeAdmin
    from edge_agent.client import LocalClient
    from edge_agent.exchange.client import LocalExchangeClient

    say("cloud-coordinator audit verify")
    result = ExchangeAdmin(world.operator()).verify_audit(world.root / "operator-audit-pin.json")
    click.echo(f"  {result['entries']} entries, every link and signature checks out")
    for name in ("hospital-a", "hospital-b"):
        say(f"edge-agent audit verify --data-dir {world.sites[name]['data_dir']}")
        with LocalClient.for_data_dir(world.sites[name]["data_dir"]) as local:
            site = LocalExchangeClient(local).verify_audit()
        click.echo(f"  {name}: verified {site['entries']} entries; the head it saw before is intact")
