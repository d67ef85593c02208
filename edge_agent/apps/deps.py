"""Whether an app's declared dependencies are installed, and import, in the agent's environment.

The site admin installs packages; the agent never does (an approval must not change the
site's environment behind the admin's back). Two checks, in order:

- each ``[project] dependencies`` requirement against the installed distributions' metadata
  (``missing_dependencies``): present, in a version the requirement allows. Extras
  (``flwr[simulation]``) are not resolved: the base distribution is what a ClientApp
  imports; environment markers are honoured;
- the top-level modules of those distributions are then imported (``import_failures``), in
  a child process of the agent's own Python with a timeout, from an empty directory and with
  nothing of the app on its path: a package whose metadata is there but whose import fails
  (a missing shared library, a broken or partial install, an incompatible numpy ABI) is
  named before the app is approved, rather than at its first message. The child imports
  only what the admin installed; a module that imports once per version is not imported
  again in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata

from silolink import errors

IMPORT_TIMEOUT_S = 60.0  # importing torch on a busy site takes a while
# (canonical distribution name, version) whose modules imported in this environment.
_imported: set[tuple[str, str]] = set()
# Run by the child: import each module named in argv[1] (JSON); print the failures as JSON.
_PROBE = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = (type(e).__name__ + ": " + " ".join(str(e).split()))[:300]
print(json.dumps(failed))
"""


def missing_dependencies(requirements: Iterable[str]) -> list[str]:
    """Each requirement not met here, with what is installed instead."""
    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            raise errors.InvalidArgument(
                f"the app declares a dependency that is not a valid requirement: {text!r}"
            ) from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{text} ({requirement.name} {installed} is installed)")
    return missing


def import_failures(requirements: Iterable[str], timeout_s: float = IMPORT_TIMEOUT_S) -> list[str]:
    """Each installed dependency's module that does not import here, with why ("" if none)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    provides: dict[str, list[str]] = {}  # distribution -> its public top-level modules
    for module, dists in metadata.packages_distributions().items():
        if module.isidentifier() and not module.startswith("_"):
            for dist in dists:
                provides.setdefault(canonicalize_name(dist), []).append(module)
    modules: dict[str, tuple[str, str]] = {}  # module -> (distribution, version)
    for text in requirements:
        requirement = Requirement(text)  # missing_dependencies has checked it parses
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # named by missing_dependencies
        if (name, version) not in _imported:
            for module in provides.get(name, []):
                modules[module] = (name, version)
    if not modules:
        return []
    names = sorted(modules)
    with tempfile.TemporaryDirectory(prefix="silolink-import-check-") as empty:
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names)], cwd=empty, capture_output=True,
                                  text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired:
            return [f"importing {', '.join(names)} did not finish within {timeout_s:g} s"]
    try:
        failed = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return [f"importing {', '.join(names)} ended the checking process (exit code {done.returncode})"]
    broken = {modules[m] for m in failed}
    _imported.update(set(modules.values()) - broken)
    return [f"{module} ({modules[module][0]} {modules[module][1]}): {why}" for module, why in sorted(failed.items())]
