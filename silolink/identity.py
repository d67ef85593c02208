"""Who is calling: identities are read from X.509 certificates, never from requests.

A certificate names its holder in a URI subject alternative name,
``silolink://site/<name>``, ``silolink://operator/<name>`` or ``silolink://console/<name>``.

An operator certificate names an account; the account's role (viewer, operator or admin)
is looked up on every call, so the role a permission rule sees is the account's current
one, never something the certificate or the request asserts.
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
    # Operator accounts, least to most: a rule naming one admits the ones above it too
    # (see ``implied_roles``), so an extension's ``{Role.OPERATOR}`` admits admins as well.
    VIEWER = "viewer"  # reads
    OPERATOR = "operator"  # also runs jobs, queries, rollouts and agreements
    ADMIN = "admin"  # also manages sites, users and keys
    CONSOLE = "console"  # the coordinator's web console, before it acts for a logged-in account
    LOCAL = "local"  # a site system on the agent's local API (loopback / unix socket)


# Account roles, least privilege first.
ACCOUNT_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


def implied_roles(roles) -> frozenset[Role]:
    """``roles`` plus every account role above the lowest account role among them."""
    out = set(roles)
    for i, role in enumerate(ACCOUNT_ROLES):
        if role in out:
            out.update(ACCOUNT_ROLES[i:])
    return frozenset(out)


def account_role(name: str) -> Role:
    """The account role called ``name`` (viewer, operator or admin)."""
    for role in ACCOUNT_ROLES:
        if role.value == name:
            return role
    raise InvalidArgument(f"unknown role {name!r}: use viewer, operator or admin")


# The path segment naming each certificate-bearing role in a SAN URI.
_URI_KIND = {Role.AGENT: "site", Role.OPERATOR: "operator", Role.CONSOLE: "console"}
_ROLE_OF_KIND = {kind: role for role, kind in _URI_KIND.items()}


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: its role, name and certificate serial (hex).

    For an operator account, ``via`` names the console when the console acts for it.
    """

    role: Role
    name: str
    serial: str = ""
    via: str = ""

    @property
    def is_account(self) -> bool:
        return self.role in ACCOUNT_ROLES

    def __str__(self) -> str:
        # Accounts are "operator:NAME" whatever their role, so the audit log names the
        # account the same way before and after a role change.
        kind = "operator" if self.is_account else self.role.value
        return f"{kind}:{self.name}" if self.name else kind


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
    """The SAN URI that names ``name`` in ``role`` (AGENT, OPERATOR or CONSOLE)."""
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
