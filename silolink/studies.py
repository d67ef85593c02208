"""Study names, as both daemons read them: the coordinator files work under a study and each
site checks that work against the studies it accepted, so the two must agree on the name."""

from __future__ import annotations

import re

from silolink import errors

DEFAULT = "default"  # every site is in it until it leaves; commands without --study use it
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


def study_name(name: str) -> str:
    """The study a request names: empty means ``default``; InvalidArgument if malformed."""
    name = (name or "").strip() or DEFAULT
    if not NAME.match(name):
        raise errors.InvalidArgument(
            f"study name {name!r}: use up to 63 letters, digits, '.', '_' and '-', starting with a letter"
        )
    return name
