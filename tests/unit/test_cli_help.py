"""Every command of every CLI explains itself."""

import click
import pytest

from cloud_coordinator.cli import main as coordinator_main
from edge_agent.cli import main as agent_main
from silolink_demo.cli import main as silolink_main


def walk(command: click.Command, path: str):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{path} {name}")


@pytest.mark.parametrize(
    "root,name", [(coordinator_main, "cloud-coordinator"), (agent_main, "edge-agent"), (silolink_main, "silolink")]
)
def test_every_command_and_option_has_help(root, name):
    for path, command in walk(root, name):
        assert command.help and command.help.strip(), f"{path} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name not in ("help", "version"):
                assert param.help, f"{path} {param.opts[0]} has no help text"
