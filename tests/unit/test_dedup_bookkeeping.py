"""Per-partition bookkeeping of the dedup agent kept outside its table (the merge-window
clock, the sweeper's key count): forgotten when a rebalance takes the partition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from agents.dedupe import Clock
from agents.stage import Sweeper


def test_a_partition_that_comes_back_restarts_its_clock_from_its_held_records() -> None:
    clock = Clock()
    clock.observe(3, received_at=1000.0, wall=50.0)
    assert clock.tick(3, {}, wall=60.0) == 1010.0  # extrapolated by 10 s of quiet
    clock.forget(3)  # revoked at wall 60; assigned again at wall 500
    held = {"c": {"rec": {"received_at": 1004.0}}}
    # not 1000 + 450: the 440 s it spent elsewhere would release held rows early
    assert clock.tick(3, held, wall=500.0) == 1004.0
    assert clock.tick(3, held, wall=502.0) == 1006.0
    assert clock.tick(4, {}, wall=502.0) == float("-inf")  # never seen, nothing held


def test_the_key_gauge_drops_a_partition_that_moved_away() -> None:
    gauge = Gauge("keys", "test", registry=CollectorRegistry())
    sweeper = Sweeper(None, window=60, every=0.0, prefixes=frozenset(), time_key="t", gauge=gauge)
    sweeper.observe(0, 10.0)
    sweeper.live.update({0: 7, 1: 5})
    sweeper.forget(1)
    assert gauge._value.get() == 7
    assert 1 not in sweeper.live and sweeper.stream_time == {0: 10.0}
