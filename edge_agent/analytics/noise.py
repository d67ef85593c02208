"""Calibrated noise for a site's answer: the discrete Laplace (two-sided geometric) mechanism.

Noise is added to the integers the site sends (counts, fixed-point sums), so its output is
an integer and leaks nothing through floating-point low bits (the weakness of textbook
Laplace noise on doubles). Sensitivities, for adding or removing one row:

    count      1
    sum        max(|lo|, |hi|) of the clipping bounds, in fixed-point units
    mean       count and sum as above, each with half the epsilon (sequential composition)
    histogram  1 in total across the bins (a row falls in one bin), so every bin gets 1/epsilon

What is guaranteed: each query answer from this site, taken alone, is epsilon-differentially
private with respect to one row of the dataset, assuming the coordinator learns this site's
noisy value (secure aggregation only makes that harder). What is not: the site keeps no
budget across queries, so k queries spend k * epsilon; the sampler draws from the OS CSPRNG
through doubles, so the distribution is discrete Laplace up to double rounding (not an exact
rational sampler); the minimum-cohort refusal itself depends on the true count.
"""

from __future__ import annotations

import math
import random

from silolink.analytics.query import SCALE, STATISTIC_NAMES
from silolink.gen.analytics.v1 import analytics_pb2 as pb

_rng = random.SystemRandom()


def _geometric(scale: float, rng: random.Random) -> int:
    """P(k) proportional to exp(-k / scale), k = 0, 1, ...: by inverting the tail exp(-k / scale)."""
    u = 1.0 - rng.random()  # (0, 1]
    return math.floor(-scale * math.log(u))


def discrete_laplace(scale: float, rng: random.Random = _rng) -> int:
    """An integer with P(k) proportional to exp(-|k| / scale)."""
    if scale <= 0:
        return 0
    return _geometric(scale, rng) - _geometric(scale, rng)


def scales(query: pb.Query, epsilon: float) -> list[float]:
    """The noise scale for each entry of the query's vector."""
    statistic = STATISTIC_NAMES[query.statistic]
    if statistic == "count":
        return [1 / epsilon]
    if statistic == "histogram":
        return [1 / epsilon] * (len(query.bin_edges) + 1)
    sensitivity = max(abs(query.bounds.min), abs(query.bounds.max)) * SCALE
    if statistic == "sum":
        return [sensitivity / epsilon]
    return [2 / epsilon, 2 * sensitivity / epsilon]


def add_noise(values: list[int], query: pb.Query, epsilon: float, rng: random.Random = _rng) -> list[int]:
    if epsilon <= 0:
        return list(values)
    return [v + discrete_laplace(s, rng) for v, s in zip(values, scales(query, epsilon), strict=True)]
