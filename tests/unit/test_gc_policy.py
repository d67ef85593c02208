"""The coordinator freezes long-lived stream objects out of full collections only once the
streams have settled after enough of them changed (cloud_coordinator/control/gc_policy.py)."""

from __future__ import annotations

import gc

from cloud_coordinator.control.gc_policy import StreamFreezer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_freezes_once_enough_streams_changed_and_settled():
    clock, streams = Clock(), [0]
    freezer = StreamFreezer(lambda: streams[0], min_changes=100, clock=clock, settle_s=10)
    try:
        for _ in range(99):
            freezer.note_change()
        streams[0] = 99
        clock.now += 60
        assert not freezer.maybe_freeze()  # too few changes, however long they settle
        freezer.note_change()
        streams[0] = 100
        clock.now += 5
        assert not freezer.maybe_freeze()  # enough, but still arriving
        clock.now += 5
        assert freezer.maybe_freeze() and freezer.passes == 1 and gc.get_freeze_count() > 0
        assert not freezer.maybe_freeze()  # nothing changed since
    finally:
        gc.unfreeze()


def test_the_next_pass_waits_for_a_tenth_of_the_frozen_streams_to_change():
    clock, streams = Clock(), [10_000]
    freezer = StreamFreezer(lambda: streams[0], min_changes=100, clock=clock, settle_s=10)
    try:
        for _ in range(10_000):
            freezer.note_change()
        clock.now += 10
        assert freezer.maybe_freeze()
        for _ in range(999):  # reconnects: churn counts, not the net count
            freezer.note_change()
        clock.now += 10
        assert not freezer.maybe_freeze()
        freezer.note_change()
        clock.now += 10
        assert freezer.maybe_freeze() and freezer.passes == 2
    finally:
        gc.unfreeze()


def test_zero_never_freezes():
    clock = Clock()
    freezer = StreamFreezer(lambda: 5_000, min_changes=0, clock=clock)
    for _ in range(5_000):
        freezer.note_change()
    clock.now += 3600
    assert not freezer.maybe_freeze() and gc.get_freeze_count() == 0
