"""Federated queries: the statistic's text form, its vector of integers, and their decoding.

Every statistic travels as a vector of integers modulo 2^64, so pairwise masks can hide
each site's vector and cancel in the sum:

    count      [rows]
    sum        [fixed-point sum]
    mean       [rows, fixed-point sum]
    histogram  [below, bin 1 .. bin k, above]

Sums are encoded in fixed point with ``FRACTION_BITS`` fractional bits (about 1.5e-5 of
resolution), once per site over its exactly rounded local sum, so the only rounding is one
half-step per site. Negative values are two's complement modulo 2^64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from silolink import errors
from silolink.gen.analytics.v1 import analytics_pb2 as pb

from . import where as where_mod

MODULUS = 1 << 64
FRACTION_BITS = 16
SCALE = 1 << FRACTION_BITS
MAX_BINS = 1000

STATISTICS = {
    "count": pb.STATISTIC_COUNT,
    "sum": pb.STATISTIC_SUM,
    "mean": pb.STATISTIC_MEAN,
    "histogram": pb.STATISTIC_HISTOGRAM,
}
STATISTIC_NAMES = {v: k for k, v in STATISTICS.items()}
_RANGE = re.compile(r"^\s*([^:]+):([^:]+):(\d+)\s*$")


def parse_bins(text: str) -> list[float]:
    """``5,10,15,20`` (edges) or ``LO:HI:N`` (N equal bins from LO to HI) into ascending edges."""
    match = _RANGE.match(text)
    try:
        if match:
            lo, hi, n = float(match.group(1)), float(match.group(2)), int(match.group(3))
            if n < 1:
                raise ValueError
            edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
        else:
            edges = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise errors.InvalidArgument(
            f"--bins {text!r}: give ascending edges (5,10,15,20) or LO:HI:N (0:30:6)"
        ) from None
    return edges


def parse_bounds(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise errors.InvalidArgument(f"--clip {text!r}: give LO:HI, such as 0:50") from None


def build_query(
    dataset: str,
    statistic: str,
    where: str = "",
    bins: str | None = None,
    clip: str | None = None,
) -> pb.Query:
    """A Query from its command-line form: ``count``, ``sum COL``, ``mean COL``,
    ``histogram COL`` (with ``bins``; ``histogram COL --bins EDGES`` in one string also works).
    """
    words = statistic.split()
    if "--bins" in words:
        at = words.index("--bins")
        if at + 1 >= len(words) or bins is not None:
            raise errors.InvalidArgument("give --bins once, followed by its edges")
        bins = words[at + 1]
        words = words[:at] + words[at + 2 :]
    if not words or words[0].lower() not in STATISTICS:
        raise errors.InvalidArgument(
            f"statistic {statistic!r}: use count, sum COLUMN, mean COLUMN or histogram COLUMN --bins EDGES"
        )
    name = words[0].lower()
    query = pb.Query(dataset=dataset, statistic=STATISTICS[name], where=where or "")
    if name == "count":
        if len(words) != 1:
            raise errors.InvalidArgument("count takes no column; filter rows with --where")
    elif len(words) != 2:
        raise errors.InvalidArgument(f"{name} takes exactly one column: {name} COLUMN")
    else:
        query.column = words[1]
    if bins is not None:
        query.bin_edges.extend(parse_bins(bins))
    if clip is not None:
        lo, hi = parse_bounds(clip)
        query.bounds.CopyFrom(pb.Bounds(min=lo, max=hi))
    check_query(query)
    return query


def check_query(query: pb.Query) -> None:
    """The checks that need no data: shape of the statistic, bins, bounds, filter syntax."""
    if not query.dataset:
        raise errors.InvalidArgument("a query needs --dataset")
    name = STATISTIC_NAMES.get(query.statistic)
    if name is None:
        raise errors.InvalidArgument("a query needs a statistic: count, sum, mean or histogram")
    if name == "count" and query.column:
        raise errors.InvalidArgument("count takes no column")
    if name != "count" and not query.column:
        raise errors.InvalidArgument(f"{name} needs a column")
    edges = list(query.bin_edges)
    if name == "histogram":
        if len(edges) < 2:
            raise errors.InvalidArgument("histogram needs --bins with at least two edges")
        if len(edges) - 1 > MAX_BINS:
            raise errors.InvalidArgument(f"histogram takes at most {MAX_BINS} bins")
        if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise errors.InvalidArgument("--bins edges must be finite and strictly ascending")
    elif edges:
        raise errors.InvalidArgument("--bins applies only to histogram")
    if query.HasField("bounds"):
        if name not in ("sum", "mean"):
            raise errors.InvalidArgument("--clip applies only to sum and mean")
        lo, hi = query.bounds.min, query.bounds.max
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise errors.InvalidArgument("--clip LO:HI needs finite bounds with LO <= HI")
    where_mod.parse(query.where)


def vector_length(query: pb.Query) -> int:
    name = STATISTIC_NAMES[query.statistic]
    return {"count": 1, "sum": 1, "mean": 2}.get(name, len(query.bin_edges) + 1)


def to_fixed(value: float) -> int:
    return round(value * SCALE)


def to_ring(values: Sequence[int]) -> list[int]:
    return [v % MODULUS for v in values]


def from_ring(value: int) -> int:
    """A ring element back to a signed integer (the total must lie within +-2^63)."""
    value %= MODULUS
    return value - MODULUS if value >= MODULUS // 2 else value


def describe(query: pb.Query) -> str:
    """One line for humans: ``mean mean_radius where diagnosis = 1``."""
    text = STATISTIC_NAMES.get(query.statistic, "?")
    if query.column:
        text += f" {query.column}"
    if query.where:
        text += f" where {where_mod.render(where_mod.parse(query.where))}"
    return text


def decode_totals(query: pb.Query, totals: Sequence[int]) -> dict[str, Any]:
    """The summed vector as the response's fields."""
    name = STATISTIC_NAMES[query.statistic]
    signed = [from_ring(v) for v in totals]
    if name == "count":
        return {"count": signed[0]}
    if name == "sum":
        return {"sum": signed[0] / SCALE}
    if name == "mean":
        count, total = signed[0], signed[1] / SCALE
        out: dict[str, Any] = {"count": count, "sum": total}
        if count > 0:
            out["mean"] = total / count
        return out
    return {"below": signed[0], "bin_counts": signed[1:-1], "above": signed[-1]}
