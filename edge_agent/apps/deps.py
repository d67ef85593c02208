"""Whether an app's declared dependencies are installed in the agent's environment.

The site admin installs packages; the agent never does (an approval must not change the
site's environment behind the admin's back). Each ``[project] dependencies`` requirement is
checked against the installed distributions' metadata, so nothing of the app or its
dependencies is imported to check. Extras (``flwr[simulation]``) are not resolved: the
base distribution is what a ClientApp imports; environment markers are honoured.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from silolink import errors


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
