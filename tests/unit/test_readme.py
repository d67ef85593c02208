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
