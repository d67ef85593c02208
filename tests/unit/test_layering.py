"""The packages import in one direction only: the shared package needs neither daemon, and
a site's agent installs and runs without any coordinator code (and the other way round)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> packages it must never import
FORBIDDEN = {
    "silolink": {"edge_agent", "cloud_coordinator", "silolink_demo", "bench"},
    "edge_agent": {"cloud_coordinator", "silolink_demo", "bench"},
    "cloud_coordinator": {"edge_agent", "silolink_demo", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_run_one_way(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {file: names for file, names in wrong.items() if names} == {}
