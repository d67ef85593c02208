"""Site selectors: which sites a query, a training job or a model rollout goes to.

Text form, one selector per ``--sites`` (or ``models rollout --to``) option; a site is
chosen if any selector matches it, and a selector matches if all its comma-separated terms
do:

    kind=hospital            the site's kind
    site=st-marys            one site by name (a bare name works too: st-marys)
    region=north             a tag (any key but kind and site)
    tag:kind=x               a tag whose key is kind or site
    all                      every site

Only enrolled, unrevoked sites are ever chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from silolink import errors
from silolink.gen.common.v1 import site_pb2
from silolink.gen.common.v1.site_pb2 import SiteSelector
from silolink.identity import validate_site_name

from .store import SiteRecord

KINDS = {"hospital": site_pb2.SITE_KIND_HOSPITAL, "factory": site_pb2.SITE_KIND_FACTORY}
KIND_NAMES = {v: k for k, v in KINDS.items()}


def parse(text: str, option: str = "--sites") -> SiteSelector:
    """One selector from its text form; InvalidArgument naming the bad term (and the
    command-line ``option`` it came in)."""
    selector = SiteSelector()
    terms = [t.strip() for t in text.split(",") if t.strip()]
    if not terms:
        raise errors.InvalidArgument(f"{option} needs a selector such as kind=hospital, region=north or a site name")
    if terms == ["all"]:
        return selector
    for term in terms:
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            key, value = "site", term
        if key == "site":
            if selector.site and selector.site != value:
                raise errors.InvalidArgument(f"{option} {text!r} names two sites; give each its own {option}")
            selector.site = validate_site_name(value)
        elif key == "kind":
            if value not in KINDS:
                raise errors.InvalidArgument(f"{option} {text!r}: kind must be one of {', '.join(KINDS)}")
            selector.kind = KINDS[value]
        else:
            key = key.removeprefix("tag:")
            if not key or not value:
                raise errors.InvalidArgument(f"{option} {text!r}: {term!r} must be key=value")
            selector.tags.add(key=key, value=value)
    return selector


def render(selector: SiteSelector) -> str:
    terms = []
    if selector.site:
        terms.append(f"site={selector.site}")
    if selector.kind:
        terms.append(f"kind={KIND_NAMES.get(selector.kind, '?')}")
    for tag in selector.tags:
        key = f"tag:{tag.key}" if tag.key in ("site", "kind") else tag.key
        terms.append(f"{key}={tag.value}")
    return ",".join(terms) or "all"


def check(selector: SiteSelector) -> None:
    """InvalidArgument for a selector no text form makes (one sent over the API)."""
    if selector.kind and selector.kind not in KIND_NAMES:
        raise errors.InvalidArgument("a site selector names an unknown kind")


def matches(site: SiteRecord, selector: SiteSelector) -> bool:
    if selector.site and site.name != selector.site:
        return False
    if selector.kind and KINDS.get(site.kind) != selector.kind:
        return False
    return all(site.tags.get(tag.key) == tag.value for tag in selector.tags)


def choose(sites: Iterable[SiteRecord], selectors: Sequence[SiteSelector]) -> list[str]:
    """The names of the enrolled, unrevoked sites any selector matches, sorted."""
    if not selectors:
        raise errors.InvalidArgument("choose the sites to ask with --sites (kind=hospital, region=north, a name)")
    for selector in selectors:
        check(selector)
    return sorted(
        s.name
        for s in sites
        if s.enrolled_at is not None and s.revoked_at is None and any(matches(s, sel) for sel in selectors)
    )
