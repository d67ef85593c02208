"""Every silolink command the documentation tells someone to type exists, with its options."""

from __future__ import annotations

import shlex

import click
import pytest

from scripts.docs_reference.cli import roots

from .pages import ROOT, all_pages, shell_lines

SHELL_BREAKS = {"&&", "||", "|", ";", ">", "then", "do"}
TOOLS = roots()


def commands_in(page) -> list[list[str]]:
    found = []
    for line in shell_lines(page):
        line = line.split(" #", 1)[0]
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for i, word in enumerate(words):
            tool = word.rsplit("/", 1)[-1]
            # "silolink" is also a user, a group and a namespace: only a command where one starts.
            at_start = i == 0 or words[i - 1] in SHELL_BREAKS
            if tool in TOOLS and i + 1 < len(words) and (tool != "silolink" or at_start):
                rest = []
                for arg in words[i + 1 :]:
                    if arg in SHELL_BREAKS:
                        break
                    rest.append(arg)
                found.append([tool, *rest])
    return found


def resolve(argv: list[str]) -> click.Command:
    """The click command ``argv`` runs; fails if a subcommand or an option does not exist."""
    tool, *args = argv
    command = TOOLS[tool]
    while args and isinstance(command, click.Group) and not args[0].startswith("-"):
        if args[0] in ("...", "NAME", "COMMAND"):  # prose such as `cloud-coordinator ... --help`
            return command
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{' '.join(argv)}: no command {args[0]!r} in {tool}"
        command, args = sub, args[1:]
    known = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    known.add("--help")
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{' '.join(argv)}: {tool} has no option {arg}"
    return command


@pytest.mark.parametrize("page", all_pages() + [ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_exists(page):
    for command in commands_in(page):
        resolve(command)


def test_the_guides_cover_the_commands_people_use():
    names = {" ".join(c[:3]) for page in all_pages() for c in commands_in(page)}
    for expected in [
        "cloud-coordinator sites add",
        "edge-agent enroll --coordinator",
        "cloud-coordinator train start",
        "cloud-coordinator models rollout",
        "cloud-coordinator backup --data-dir",
        "cloud-coordinator restore --input",
    ]:
        assert any(n.startswith(expected) for n in names), expected


def test_a_command_that_does_not_exist_is_caught():
    with pytest.raises(AssertionError, match="no command 'frobnicate'"):
        resolve(["edge-agent", "frobnicate"])
    with pytest.raises(AssertionError, match="has no option --colour"):
        resolve(["edge-agent", "data", "list", "--colour"])


def test_readme_links_the_documentation_site():
    readme = (ROOT / "README.md").read_text()
    assert "mkdocs build --strict" in readme
    assert "(docs/how-to/operator/deploy.md)" in readme
