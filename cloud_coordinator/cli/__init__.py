"""``cloud-coordinator``: run the coordinator and operate it.

Each area adds its commands in a module of its own here and registers them below.
"""

from __future__ import annotations

import click

from silolink import __version__
from silolink.cli_util import CommandGroup

from . import apps, backup, exchange, health, models, query, server, sites, studies, training, users


@click.group(cls=CommandGroup)
@click.version_option(__version__, prog_name="cloud-coordinator")
def main() -> None:
    """Operate a silolink cloud coordinator: set it up, serve it, manage sites."""


main.add_command(server.init)
main.add_command(server.serve)
main.add_command(sites.sites)
main.add_command(health.health)
main.add_command(backup.backup)
main.add_command(backup.restore)
main.add_command(exchange.agreements)
main.add_command(exchange.audit)
main.add_command(training.train)
main.add_command(query.query)
main.add_command(models.models)
main.add_command(apps.apps)
main.add_command(users.users)
main.add_command(studies.studies)
main.add_command(studies.queue)
