"""Site selectors: the one grammar queries, training jobs and model rollouts choose sites with."""

from __future__ import annotations

import pytest

from cloud_coordinator.sites import selector
from cloud_coordinator.sites.store import SiteRecord
from silolink import errors


def test_selectors():
    sites = [
        SiteRecord("hospital-a", "hospital", {"region": "north"}, enrolled_at=1.0),
        SiteRecord("hospital-b", "hospital", {"region": "south"}, enrolled_at=1.0),
        SiteRecord("hospital-c", "hospital", {"region": "north"}, enrolled_at=1.0, revoked_at=2.0),
        SiteRecord("hospital-d", "hospital", {"region": "north"}),  # never enrolled
        SiteRecord("factory-a", "factory", {"kind": "press"}, enrolled_at=1.0),
    ]

    def choose(*texts):
        return selector.choose(sites, [selector.parse(t) for t in texts])

    assert choose("kind=hospital") == ["hospital-a", "hospital-b"]
    assert choose("kind=hospital,region=north") == ["hospital-a"]
    assert choose("region=south", "factory-a") == ["factory-a", "hospital-b"]
    assert choose("tag:kind=press") == ["factory-a"]
    assert choose("all") == ["factory-a", "hospital-a", "hospital-b"]
    assert selector.render(selector.parse("kind=factory,tag:kind=press,site=factory-a")) == (
        "site=factory-a,kind=factory,tag:kind=press"
    )
    for bad, message in [
        ("kind=zoo", "kind must be one of"),
        ("Bad Name", "invalid name"),
        ("", "needs a selector"),
        ("site=hospital-a,site=hospital-b", "names two sites"),
        ("=x", "must be key=value"),
    ]:
        with pytest.raises(errors.InvalidArgument, match=message):
            selector.parse(bad)
    with pytest.raises(errors.InvalidArgument, match="--sites"):
        selector.choose(sites, [])


@pytest.mark.parametrize(
    ("text", "chosen"),
    [("kind=hospital", ["hospital-a"]), ("tag:region=north", ["hospital-a"]), ("site=factory-a", ["factory-a"])],
)
def test_the_forms_rollouts_took_before_still_choose_the_same_sites(text, chosen):
    sites = [
        SiteRecord("hospital-a", "hospital", {"region": "north"}, enrolled_at=1.0),
        SiteRecord("factory-a", "factory", {"region": "south"}, enrolled_at=1.0),
    ]
    assert selector.choose(sites, [selector.parse(text, "--to")]) == chosen


def test_errors_name_the_option_the_selector_came_in():
    with pytest.raises(errors.InvalidArgument, match="--to 'kind=zoo': kind must be one of"):
        selector.parse("kind=zoo", "--to")
