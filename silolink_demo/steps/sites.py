"""The demo's steps: site lifecycle."""

from __future__ import annotations

import click

from ..world import DemoWorld, say


def revoke_a_site(world: DemoWorld) -> None:
    """Show revocation: a factory cut off at once, its stream closed."""
    operator = world.operator()
    say("cloud-coordinator sites revoke factory-a")
    operator.revoke_site("factory-a")
    state = {s["name"]: s["state"] for s in operator.list_sites()}
    click.echo(f"  factory-a is now {state['factory-a']}; the hospitals stay {state['hospital-a']}")
