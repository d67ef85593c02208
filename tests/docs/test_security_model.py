"""Every test the documentation names (`tests/...py::test_name`) exists, so the security
model's evidence cannot silently disappear."""

from __future__ import annotations

import ast
import re

import pytest

from .pages import ROOT, all_pages

REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+(?:::\w+)?)")


def defined_tests(path) -> set[str]:
    """Names of test functions in a file, and Class::method for tests in classes."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                    names.add(f"{node.name}::{item.name}")
    return names


def named_tests() -> list[tuple[str, str, str]]:
    found = []
    for page in all_pages():
        for path, name in REFERENCE.findall(page.read_text()):
            found.append((str(page.relative_to(ROOT)), path, name))
    return found


def missing(references: list[tuple[str, str, str]]) -> list[str]:
    problems = []
    for page, path, name in references:
        file = ROOT / path
        if not file.exists():
            problems.append(f"{page}: {path} does not exist")
        elif name not in defined_tests(file):
            problems.append(f"{page}: {path} has no test {name}")
    return problems


def test_every_test_the_docs_name_exists():
    references = named_tests()
    assert missing(references) == []


def test_the_security_model_backs_its_claims_with_tests():
    security = [r for r in named_tests() if r[0] == "docs/security.md"]
    assert len(security) >= 30
    # Each row of the threat table names at least one test.
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("## Threats and how each is met", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| threat", "| ---"))]
    assert rows and all(REFERENCE.search(row) for row in rows), [r for r in rows if not REFERENCE.search(r)]


@pytest.mark.parametrize(
    "reference, problem",
    [
        (("docs/x.md", "tests/unit/test_pki.py", "test_that_was_renamed"), "has no test test_that_was_renamed"),
        (("docs/x.md", "tests/unit/test_gone.py", "test_a"), "tests/unit/test_gone.py does not exist"),
    ],
)
def test_a_named_test_that_does_not_exist_is_caught(reference, problem):
    (found,) = missing([reference])
    assert problem in found
