"""Per-partition bookkeeping of the dedup agent kept outside its table (the merge-window
clock, the sweeper's key count): forgotten when a rebalance takes the partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from rocksdict import Options, Rdict

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


class _Table:
    """A table whose store has a database per partition, reached as Faust's RocksDB
    store offers it (agents.stage.partition_dbs)."""

    def __init__(self, dbs: dict[int, Any]) -> None:
        self.data = type("Store", (), {"_db_for_partition": staticmethod(dbs.__getitem__)})()


class _State:
    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}
        self.event: Any = None


def test_a_pass_walks_a_bounded_number_of_keys_per_batch_and_expires_exactly_the_old_ones(
    tmp_path: Path,
) -> None:
    db = Rdict(str(tmp_path / "p0"), options=Options(raw_mode=True))
    try:
        old = {f"e|old{i:04}".encode() for i in range(0, 1000, 3)}
        for i in range(1000):
            key = f"e|{'old' if f'e|old{i:04}'.encode() in old else 'new'}{i:04}".encode()
            t = 100.0 if key in old else 5000.0
            # the time first (as the stages write it) or not (read from the JSON)
            value = {"t": t, "cid": "c"} if i % 2 else {"cid": "c", "t": t}
            db[key] = orjson.dumps(value)
        db[b"__faust\x00offset__"] = b"42"  # Faust's own metadata: not a state key
        gauge = Gauge("keys2", "test", registry=CollectorRegistry())
        sweeper = Sweeper(
            _Table({0: db}), window=1000, every=60.0, prefixes=frozenset({b"e|"}),
            time_key="t", gauge=gauge, step=128,
        )  # fmt: skip
        sweeper.observe(0, 5500.0)  # cutoff 4500: the old keys (t=100) expire
        deleted: set[bytes] = set()
        batches = 0
        while True:
            state = _State()
            removed = sweeper.sweep(state, {0: "event"}, now=1000.0)
            batches += 1
            assert removed == len(state.pending)
            deleted |= {k.encode() for k in state.pending}
            if 0 not in sweeper.cursor:
                break
            assert batches < 20
        assert deleted == old
        assert batches == 8  # 1001 keys, 128 per batch
        assert sweeper.live == {0: 1000 - len(old)} and gauge._value.get() == 1000 - len(old)
        # the next pass waits for the interval
        state = _State()
        assert sweeper.sweep(state, {0: "event"}, now=1030.0) == 0 and 0 not in sweeper.cursor
    finally:
        db.close()
