"""Time windows in which a site gives a study compute, such as "22:00-06:00" (nights only).

A site declares them in its own local time; the coordinator's scheduler needs to know, for a
job of a given expected duration, whether it fits in an open window now, and if not when the
next one opens. Both sides use this module, so a site and its coordinator read a window the
same way. Times are seconds since the epoch (UTC); a site's local time is UTC plus its offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from silolink.errors import InvalidArgument

DAY_S = 86400
_CLOCK = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _minutes(text: str, whole: str) -> int:
    match = _CLOCK.match(text.strip())
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise InvalidArgument(f"time window {whole!r}: {text.strip()!r} is not a time of day such as 22:00")
    return int(match.group(1)) * 60 + int(match.group(2))


@dataclass(frozen=True, order=True)
class TimeWindow:
    """A daily window from ``start_min`` to ``end_min`` minutes after local midnight.

    An end at or before the start wraps past midnight ("22:00-06:00"); equal start and end
    would be empty, so "00:00-24:00" is the way to say all day.
    """

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        start, sep, end = text.partition("-")
        if not sep:
            raise InvalidArgument(f"time window {text!r}: write it as START-END, e.g. 22:00-06:00")
        window = cls(_minutes(start, text), _minutes(end, text))
        if window.start_min == window.end_min:
            raise InvalidArgument(f"time window {text!r} is empty; use 00:00-24:00 for all day")
        return window

    @property
    def length_s(self) -> int:
        return ((self.end_min - self.start_min) % (24 * 60) or 24 * 60) * 60

    def __str__(self) -> str:
        def clock(m: int) -> str:
            return f"{m // 60:02d}:{m % 60:02d}"

        return f"{clock(self.start_min)}-{clock(self.end_min)}"

    def occurrence(self, t: float, utc_offset_s: int) -> tuple[float, float]:
        """The (open, close) times of this window's occurrence that is open at ``t`` or opens next."""
        local = t + utc_offset_s
        midnight = math.floor(local / DAY_S) * DAY_S
        # The occurrence that opened yesterday may still be open (a window past midnight).
        for day in (midnight - DAY_S, midnight, midnight + DAY_S):
            opens = day + self.start_min * 60
            closes = opens + self.length_s
            if local < closes:
                return opens - utc_offset_s, closes - utc_offset_s
        raise AssertionError("unreachable: a window opens every day")


def parse_windows(texts: Sequence[str]) -> tuple[TimeWindow, ...]:
    """Windows from their text forms, sorted; an empty list means always open."""
    return tuple(sorted(TimeWindow.parse(t) for t in texts))


def open_for(windows: Sequence[TimeWindow], utc_offset_s: int, t: float) -> float:
    """How long from ``t`` one window stays open: 0 when none is open, infinite without windows."""
    if not windows:
        return math.inf
    longest = 0.0
    for window in windows:
        opens, closes = window.occurrence(t, utc_offset_s)
        if opens <= t:
            longest = max(longest, closes - t)
    return longest


def fits(windows: Sequence[TimeWindow], utc_offset_s: int, t: float, duration_s: float) -> bool:
    """Whether work from ``t`` for ``duration_s`` lies wholly inside one open window."""
    return open_for(windows, utc_offset_s, t) >= duration_s


def next_fit(windows: Sequence[TimeWindow], utc_offset_s: int, t: float, duration_s: float) -> float | None:
    """The earliest time from ``t`` at which work of ``duration_s`` fits in a window; None if it never does."""
    if not windows:
        return t
    if fits(windows, utc_offset_s, t, duration_s):
        return t
    starts = [w.occurrence(t, utc_offset_s)[0] for w in windows if w.length_s >= duration_s]
    starts = [s if s > t else s + DAY_S for s in starts]  # an occurrence already open is too short now
    return min(starts) if starts else None


def longest_s(windows: Sequence[TimeWindow]) -> float:
    """The longest stretch a single window stays open (a day when there is no window)."""
    return max((w.length_s for w in windows), default=float("inf"))
