"""Sites' resource history in memory: one sample per interval, a ring per site that grows
to its capacity and then wraps, reads in order, and hostile reports kept harmless."""

from __future__ import annotations

import math

import pytest

from cloud_coordinator.sites.history import FIRST_CAPACITY, MAX_LOAD, SAMPLE, ResourceHistory
from silolink.gen.common.v1.site_pb2 import ResourceReport


def report(load: float, available: int = 2**33, disk: int = 2**40) -> ResourceReport:
    return ResourceReport(
        cpu_count=8,
        load_average_1m=load,
        memory_total_bytes=2**34,
        memory_available_bytes=available,
        disk_free_bytes=disk,
    )


def test_one_sample_per_interval_the_first_report_of_each():
    history = ResourceHistory(capacity=100, interval_s=60)
    for second in range(0, 600, 5):  # a heartbeat every 5 s for 10 minutes
        history.add("a", 1_000_000 + second, report(second / 100))
    samples = history.samples("a")
    assert [s.at for s in samples] == [1_000_000 + 60 * i for i in range(10)]
    assert [s.load_average_1m for s in samples] == [round(0.6 * i, 2) for i in range(10)]
    assert samples[0].memory_total_bytes == 2**34 and samples[0].memory_available_bytes == 2**33
    assert samples[0].disk_free_bytes == 2**40
    assert [s.at for s in history.samples("a", after=1_000_000 + 420)] == [1_000_480, 1_000_540]
    assert history.samples("never-reported") == []


def test_the_ring_grows_to_its_capacity_then_keeps_the_newest():
    history = ResourceHistory(capacity=50, interval_s=1)
    history.add("a", 10, report(0.0))
    assert history.bytes_held() == FIRST_CAPACITY * SAMPLE.itemsize  # a new site costs little
    for t in range(11, 10 + 130):
        history.add("a", t, report(t))
    samples = history.samples("a")
    assert len(samples) == 50 and history.bytes_held() == 50 * SAMPLE.itemsize
    assert [s.at for s in samples] == list(range(90, 140))
    assert all(s.load_average_1m == s.at for s in samples)


def test_no_history_when_the_capacity_is_zero_and_forgotten_sites():
    off = ResourceHistory(capacity=0, interval_s=60)
    off.add("a", 1.0, report(1.0))
    assert off.samples("a") == [] and off.sites() == 0
    on = ResourceHistory(capacity=10, interval_s=60)
    on.add("a", 1.0, report(1.0))
    on.forget("a")
    assert on.samples("a") == [] and on.sites() == 0


def test_hostile_values_are_kept_finite():
    history = ResourceHistory(capacity=10, interval_s=1)
    history.add("a", 1.0, report(1e300, available=2**63 - 1, disk=2**63 - 1))
    history.add("a", 2.0, report(-5.0))
    big, negative = history.samples("a")
    assert big.load_average_1m == pytest.approx(MAX_LOAD, rel=1e-6) and math.isfinite(big.load_average_1m)
    assert 2**62 < big.memory_available_bytes <= 2**63 - 1 and negative.load_average_1m == 0.0


def test_times_are_kept_to_a_sixteenth_of_a_second_for_years():
    history = ResourceHistory(capacity=10, interval_s=0.25)
    for i in range(4):
        history.add("a", 1_700_000_000.1 + 0.25 * i, report(i))
    assert [s.at for s in history.samples("a")] == pytest.approx(
        [1_700_000_000.1 + 0.25 * i for i in range(4)], abs=1 / 32
    )
    assert len({s.at for s in history.samples("a")}) == 4
    # Past what the ticks can count (8.5 years after the first sample), the ring starts again.
    history.add("a", 1_700_000_000 + 9 * 365 * 86400, report(9.0))
    (only,) = history.samples("a")
    assert only.at == 1_700_000_000 + 9 * 365 * 86400 and only.load_average_1m == 9.0
