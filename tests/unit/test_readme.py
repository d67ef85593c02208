"""The README's commands are what CI runs and what the package provides."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split(marker, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return next(line for line in block.splitlines() if line.strip() and not line.startswith("#")).strip()


def test_ci_runs_the_readmes_test_command():
    command = readme_command("<!-- test-command")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert command.endswith("python -m pytest")


def test_readme_demo_command_installs_and_runs_the_demo():
    text = (ROOT / "README.md").read_text()
    assert "pip install -e '.[demo]' && .venv/bin/silolink demo" in text


def test_code_is_lint_clean():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def readme_shell_commands(text: str) -> list[list[str]]:
    """Each silolink command in the README's shell blocks (not prose), as argv."""
    import re
    import shlex

    from tests.docs.pages import BLOCK
    from tests.docs.test_commands import SHELL_BREAKS, TOOLS

    found = []
    for block in BLOCK.findall(text.replace("\\\n", " ")):
        for line in block.splitlines():
            try:
                words = shlex.split(re.sub(r"\s#.*$", "", line))
            except ValueError:  # not a command line (a quote spanning lines)
                continue
            for i, word in enumerate(words):
                if word.rsplit("/", 1)[-1] in TOOLS and (i == 0 or words[i - 1] in SHELL_BREAKS):
                    rest = words[i + 1 :]
                    cut = next((j for j, w in enumerate(rest) if w in SHELL_BREAKS), len(rest))
                    found.append([word.rsplit("/", 1)[-1], *rest[:cut]])
    return found


def what_cannot_work(argv: list[str], exported: set[str]) -> list[str]:
    """Why a command, as written, stops before doing anything: a required option or argument
    missing, or an operator command that names no credentials (`--data-dir`/`--credentials`)."""
    import click

    from tests.docs.test_commands import TOOLS, resolve

    resolve(argv)  # the command and its options exist
    command, args = TOOLS[argv[0]], argv[1:]
    while args and isinstance(command, click.Group) and not args[0].startswith("-"):
        command, args = command.get_command(click.Context(command), args[0]), args[1:]
    if isinstance(command, click.Group):
        return []
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    given, positional, words = set(), 0, iter(args)
    for word in words:
        name = word.split("=", 1)[0]
        if name in options:
            given.add(name)
            if not options[name].is_flag and "=" not in word:
                next(words, None)  # its value
        elif not word.startswith("-"):
            positional += 1
    problems = []
    for param in command.params:
        if isinstance(param, click.Option) and param.required and not set(param.opts) & given:
            if param.envvar not in exported:
                problems.append(f"{param.opts[0]} missing")
    operator = any(p.name == "credentials_file" for p in command.params)
    credentials = {"SILOLINK_OPERATOR_CREDENTIALS", "SILOLINK_COORDINATOR_DATA_DIR"}
    if operator and not given & {"--data-dir", "--credentials"} and not exported & credentials:
        problems.append("no operator credentials (--data-dir or --credentials)")
    required = sum(1 for p in command.params if isinstance(p, click.Argument) and p.required)
    if positional < required:
        problems.append(f"needs {required} argument(s), has {positional}")
    return problems


def test_every_readme_command_can_run_as_written():
    """A reader who copies a README command gets past its argument checks: its required
    options and credentials are on the line (or exported in the README)."""
    import re

    text = (ROOT / "README.md").read_text()
    exported = set(re.findall(r"export (SILOLINK_[A-Z_]+)=", text))
    commands = readme_shell_commands(text)
    assert any(c[:3] == ["cloud-coordinator", "apps", "push"] for c in commands)
    assert any(c[:3] == ["edge-agent", "apps", "approve"] for c in commands)
    broken = {" ".join(c): p for c in commands if (p := what_cannot_work(c, exported))}
    assert not broken, broken


def test_a_readme_command_that_cannot_work_is_caught():
    assert what_cannot_work(["cloud-coordinator", "apps", "push", "./my-app", "--json"], set()) == [
        "no operator credentials (--data-dir or --credentials)"
    ]
    assert what_cannot_work(["edge-agent", "apps", "approve", "my-app:1.0.0"], set()) == ["--data-dir missing"]
    assert what_cannot_work(["edge-agent", "apps", "approve", "my-app:1.0.0"], {"SILOLINK_AGENT_DATA_DIR"}) == []
    assert what_cannot_work(["cloud-coordinator", "apps", "push", "./my-app", "--credentials", "c.json"], set()) == []
