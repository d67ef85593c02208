"""``edge-agent``: enroll a site, run its daemon, inspect it.

Each area adds its commands in a module of its own here and registers them below.
"""

from __future__ import annotations

import click

from silolink import __version__
from silolink.cli_util import CommandGroup

from . import apps, daemon, data, exchange, health, models, privacy, studies


@click.group(cls=CommandGroup)
@click.version_option(__version__, prog_name="edge-agent")
def main() -> None:
    """Run a silolink edge agent at a hospital or factory."""


main.add_command(daemon.enroll)
main.add_command(daemon.run)
main.add_command(daemon.status)
main.add_command(health.health)
main.add_command(data.data)
main.add_command(data.infer)
main.add_command(models.models)
main.add_command(apps.apps)
main.add_command(exchange.send)
main.add_command(exchange.inbox)
main.add_command(exchange.receive)
main.add_command(exchange.agreements)
main.add_command(exchange.keys)
main.add_command(exchange.audit)
main.add_command(privacy.privacy)
main.add_command(studies.studies)
