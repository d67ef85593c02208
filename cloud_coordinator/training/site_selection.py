"""Which sites a job (or rollout, or query) targets: ``kind=hospital``, ``site=NAME``,
``TAG=VALUE``; a site matching any selector is in."""

from __future__ import annotations

from collections.abc import Iterable

from silolink import errors


def parse(selectors: Iterable[str]) -> list[tuple[str, str]]:
    parsed = []
    for selector in selectors:
        key, sep, value = selector.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise errors.InvalidArgument(
                f"site selector {selector!r} must look like kind=hospital, site=NAME or TAG=VALUE"
            )
        parsed.append((key.strip(), value.strip()))
    if not parsed:
        raise errors.InvalidArgument("name the sites: --sites kind=hospital, site=NAME or TAG=VALUE")
    return parsed


def matches(selectors: list[tuple[str, str]], name: str, kind: str, tags: dict[str, str]) -> bool:
    for key, value in selectors:
        if key == "site" and value == name:
            return True
        if key == "kind" and value == kind:
            return True
        if key not in ("site", "kind") and tags.get(key) == value:
            return True
    return False
