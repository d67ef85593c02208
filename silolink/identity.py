"""Who is calling: identities are read from X.509 certificates, never from requests.

A certificate names its holder in a URI subject alternative name,
``silolink://site/<name>`` or ``silolink://operator/<name>``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from silolink.errors import InvalidArgument

URI_SCHEME = "silolink"
SITE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])$")


class Role(enum.Enum):
    """The kinds of caller a permission table distinguishes."""

    ANONYMOUS = "anonymous"  # no client certificate (enrollment, health)
    AGENT = "agent"  # an enrolled site's agent
    OPERATOR = "operator"  # a coordinator operator
    LOCAL = "local"  # a site system on the agent's local API (loopback / unix socket)


# The path segment naming each certificate-bearing role in a SAN URI.
_URI_KIND = {Role.AGENT: "site", Role.OPERATOR: "operator"}
_ROLE_OF_KIND = {kind: role for role, kind in _URI_KIND.items()}


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: its role, name and certificate serial (hex)."""

    role: Role
    name: str
    serial: str = ""

    def __str__(self) -> str:
        return f"{self.role.value}:{self.name}" if self.name else self.role.value


ANONYMOUS = Identity(Role.ANONYMOUS, "")
LOCAL = Identity(Role.LOCAL, "")


def validate_site_name(name: str) -> str:
    """Return ``name`` if it is a valid site or operator name, else raise InvalidArgument."""
    if not SITE_NAME_RE.match(name or ""):
        raise InvalidArgument(
            f"invalid name {name!r}: use 2 to 63 lower-case letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return name


def identity_uri(role: Role, name: str) -> str:
    """The SAN URI that names ``name`` in ``role`` (AGENT or OPERATOR)."""
    return f"{URI_SCHEME}://{_URI_KIND[role]}/{validate_site_name(name)}"


def parse_identity_uri(uri: str) -> tuple[Role, str] | None:
    """Parse a SAN URI into (role, name); None if it is not a silolink identity."""
    prefix = f"{URI_SCHEME}://"
    if not uri.startswith(prefix):
        return None
    kind, _, name = uri[len(prefix) :].partition("/")
    role = _ROLE_OF_KIND.get(kind)
    if role is None or not SITE_NAME_RE.match(name):
        return None
    return role, name
