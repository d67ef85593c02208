"""Every silolink command the deployment guide tells someone to type exists, with its options."""

from __future__ import annotations

import re
import shlex

from .helpers import ROOT, resolve_cli

GUIDE = ROOT / "docs" / "deploy.md"
SHELL_BREAKS = {"&&", "||", "|", ";", ">", "then"}


def commands_in_guide() -> list[list[str]]:
    text = GUIDE.read_text().replace("\\\n", " ")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    snippets = blocks + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    found = []
    for snippet in snippets:
        for line in snippet.splitlines():
            line = line.split(" #", 1)[0]
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            for i, word in enumerate(words):
                tool = word.rsplit("/", 1)[-1]
                if tool in ("cloud-coordinator", "edge-agent") and i + 1 < len(words):
                    rest = []
                    for arg in words[i + 1 :]:
                        if arg in SHELL_BREAKS:
                            break
                        rest.append(arg)
                    found.append([tool, *rest])
    return found


def test_every_command_in_the_deployment_guide_exists():
    commands = commands_in_guide()
    names = {" ".join(c[:2]) for c in commands}
    assert {"cloud-coordinator backup", "cloud-coordinator restore", "cloud-coordinator init"} <= names
    for command in commands:
        resolve_cli(command)


def test_readme_links_the_deployment_guide():
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()
