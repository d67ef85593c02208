"""What each console page shows, computed from admin API results: filtering, pagination,
the overview's counts and alerts. Plain functions over dicts (no web framework, no grpc), so
they are tested without a browser."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 50
# Alerts on the overview.
CERT_EXPIRY_WARNING_S = 14 * 24 * 3600


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
def resource_series(site: dict[str, Any]) -> dict[str, list[float]]:
    """The site page's chart: the coordinator's history of the site's resource reports
    (one sample per interval, kept while it runs), then its latest report if newer."""
    points = [(h["at"], h["load_average_1m"], h["memory_total_bytes"], h["memory_available_bytes"])
              for h in site.get("history", [])]  # fmt: skip
    res = site.get("resources") or {}
    beat = epoch_of(site.get("last_heartbeat"))
    if beat is not None and (not points or beat > points[-1][0]):
        points.append(
            (
                beat,
                res.get("load_average_1m", 0.0),
                res.get("memory_total_bytes", 0),
                res.get("memory_available_bytes", 0),
            )
        )
    return {
        "times": [t for t, _, _, _ in points],
        "load": [load for _, load, _, _ in points],
        "memory_percent": [round((total - free) / total * 100, 1) if total else 0.0 for _, _, total, free in points],
    }


def query_text(query: dict[str, Any]) -> str:
    """``mean mean_radius where diagnosis = 1`` for a query history entry."""
    text = query["statistic"] + (f" {query['column']}" if query.get("column") else "")
    return text + (f" where {query['where']}" if query.get("where") else "")


def refusing(query: dict[str, Any]) -> list[dict[str, str]]:
    """The sites that said no (not those that were offline or too slow)."""
    return [r for r in query["refusals"] if r["code"] not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")]


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


def planned_rounds(job: dict[str, Any]) -> int | str:
    """How many rounds a job runs: its app's ``num-server-rounds`` (Flower's convention, set
    from the form's run_config or the app's default), else the old ``rounds`` field; "?" for
    an app that declares neither."""
    return job.get("run_config", {}).get("num-server-rounds") or job["spec"].get("rounds") or "?"
