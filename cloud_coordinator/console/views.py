"""What each console page shows, computed from admin API results: filtering, pagination,
the overview's counts and alerts. Plain functions over dicts (no web framework, no grpc), so
they are tested without a browser."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PAGE_SIZE = 50
# Alerts on the overview.
CERT_EXPIRY_WARNING_S = 14 * 24 * 3600
RESOURCE_SAMPLES = 360  # per site, kept while the console runs (about 12 minutes at 2 s)


def epoch_of(iso_ts: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso_ts).timestamp() if iso_ts else None


@dataclass(frozen=True)
class Page:
    """One page of a filtered list."""

    items: list[Any]
    number: int
    pages: int
    total: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def paginate(items: Sequence[Any], number: int, size: int = PAGE_SIZE) -> Page:
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return Page(list(items[start : start + size]), number, pages, len(items))


def api_page(items: list[Any], number: int, total: int, size: int = PAGE_SIZE) -> Page:
    """A page the admin API already cut (``items`` is page ``number`` of ``total``)."""
    return Page(items, number, max(1, math.ceil(total / size)), total)


def page_number(text: str | None) -> int:
    try:
        return max(1, int(text or 1))
    except ValueError:
        return 1


# -- sites -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteFilter:
    kind: str = ""
    state: str = ""
    tag: str = ""  # KEY=VALUE or KEY
    name: str = ""  # substring

    def matches(self, site: dict[str, Any]) -> bool:
        if self.kind and site["kind"] != self.kind:
            return False
        if self.state and site["state"] != self.state:
            return False
        if self.name and self.name.lower() not in site["name"]:
            return False
        if self.tag:
            key, sep, value = self.tag.partition("=")
            if key not in site["tags"] or (sep and site["tags"][key] != value):
                return False
        return True


def filter_sites(sites: Iterable[dict[str, Any]], flt: SiteFilter) -> list[dict[str, Any]]:
    return [s for s in sites if flt.matches(s)]


@dataclass(frozen=True)
class Alert:
    level: str  # "warning" | "error"
    text: str
    link: str


def site_alerts(sites: Iterable[dict[str, Any]], now: float, stale_after_s: float) -> list[Alert]:
    alerts = []
    for site in sites:
        if site["state"] == "revoked":
            continue
        expires = epoch_of(site.get("certificate_expires_at"))
        if expires is not None and expires - now < CERT_EXPIRY_WARNING_S:
            days = max(0, int((expires - now) // 86400))
            alerts.append(
                Alert("warning", f"site {site['name']}: certificate expires in {days} days", f"/sites/{site['name']}")
            )
        beat = epoch_of(site.get("last_heartbeat"))
        if site["state"] == "offline" and beat is not None and now - beat > stale_after_s:
            alerts.append(
                Alert("warning", f"site {site['name']}: no heartbeat for {ago(beat, now)}", f"/sites/{site['name']}")
            )
    return alerts


def job_alerts(jobs: Iterable[dict[str, Any]], limit: int = 10) -> list[Alert]:
    failed = [j for j in jobs if j["state"] == "failed"][:limit]
    return [
        Alert("error", f"job {j['job']} failed: {j.get('error') or 'no reason given'}", f"/training/{j['job']}")
        for j in failed
    ]


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def counts(items: Iterable[dict[str, Any]], key: str, names: Sequence[str]) -> dict[str, int]:
    found = Counter(item[key] for item in items)
    return {name: found.get(name, 0) for name in names}


# -- training ----------------------------------------------------------------------------
def round_series(job: dict[str, Any]) -> dict[str, Any]:
    """Per-round series for the job's chart: x = round, one series per metric key."""
    rounds = job.get("rounds", [])
    # Series are named by metric key; a key both phases report is told apart by its phase.
    train = {k for r in rounds for k in r["train_metrics"]}
    evaluate = {k for r in rounds for k in r["eval_metrics"]}
    names = {("train_metrics", k): (f"train {k}" if k in evaluate else k) for k in train}
    names |= {("eval_metrics", k): (f"eval {k}" if k in train else k) for k in evaluate}
    series: dict[str, list[float | None]] = {name: [] for name in sorted(names.values())}
    for r in rounds:
        for (phase, key), name in names.items():
            value = r[phase].get(key)
            series[name].append(value if value is None or math.isfinite(value) else None)
    return {
        "rounds": [r["round"] for r in rounds],
        "durations": [r["duration_s"] for r in rounds],
        "series": series,
    }


# -- resources over time -------------------------------------------------------------------
@dataclass
class ResourceHistory:
    """Each site's resource reports as the console saw them, newest last (in memory: the
    coordinator keeps only the latest report; Prometheus keeps the long history)."""

    clock: Callable[[], float]
    samples: dict[str, deque] = field(default_factory=dict)

    def record(self, site: dict[str, Any]) -> None:
        res = site.get("resources") or {}
        beat = epoch_of(site.get("last_heartbeat"))
        if beat is None:
            return
        ring = self.samples.setdefault(site["name"], deque(maxlen=RESOURCE_SAMPLES))
        if ring and ring[-1][0] == beat:
            return
        total = res.get("memory_total_bytes") or 0
        used = total - (res.get("memory_available_bytes") or 0) if total else 0
        ring.append((beat, res.get("load_average_1m", 0.0), used / total * 100 if total else 0.0))

    def series(self, name: str) -> dict[str, list[float]]:
        ring = list(self.samples.get(name, ()))
        return {
            "times": [t for t, _, _ in ring],
            "load": [load for _, load, _ in ring],
            "memory_percent": [round(m, 1) for _, _, m in ring],
        }


# -- audit ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditFilter:
    action: str = ""  # prefix, e.g. "site." or "site.add"
    site: str = ""  # the subject, or a site named in the actor
    account: str = ""  # operator:NAME

    def matches(self, entry: Any) -> bool:
        if self.action and not entry.action.startswith(self.action):
            return False
        if self.site and entry.subject != self.site and entry.actor != f"site:{self.site}":
            return False
        if self.account and entry.actor != f"operator:{self.account}":
            return False
        return True
