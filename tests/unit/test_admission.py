"""Admission of new control streams at a bounded rate, after a burst."""

import pytest

from cloud_coordinator.control.admission import AdmissionRate


def test_a_burst_is_admitted_at_once_then_the_rate_applies():
    now = [100.0]
    rate = AdmissionRate(rate_per_s=10, burst=5, clock=lambda: now[0])
    assert [rate.delay() for _ in range(5)] == [0.0] * 5
    assert [round(rate.delay(), 3) for _ in range(3)] == [0.1, 0.2, 0.3]  # then one every 1/rate
    now[0] += 10  # quiet for a while: the burst is available again
    assert rate.delay() == 0.0


def test_nonsense_rates_are_refused():
    with pytest.raises(ValueError):
        AdmissionRate(0, 1)
    with pytest.raises(ValueError):
        AdmissionRate(10, 0)
