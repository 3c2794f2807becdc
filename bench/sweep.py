"""Expiry sweep of a stateful stage's partition (agents/stage.py ``Sweeper``): how long
one pass over a large RocksDB partition takes, and how long it holds the event loop per
batch (the pass is cut into steps of ``SWEEP_STEP`` keys, one step per batch).

Baseline in the same run: a bare iteration over the same database (keys and values,
nothing decoded), the least any pass can cost.

    python bench/sweep.py [--keys 700000] [--step 4096]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from rocksdict import Options, Rdict, WriteBatch

from agents.dedupe import STATE_PREFIXES
from agents.stage import ROCKSDB_OPTIONS, SWEEP_STEP, Sweeper


class _Table:
    def __init__(self, db: Rdict) -> None:
        self.data = type("Store", (), {"_dbs": {0: db}})()


class _State:
    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}
        self.event: Any = None


def fill(db: Rdict, n: int, now: float) -> None:
    """Dedup-like keys and values (event-id keys, fbp registrations, bookkeeping); a
    tenth older than the window."""
    rng = random.Random(1)
    wb = WriteBatch(raw_mode=True)
    for i in range(n):
        t = now - (200_000 if i % 10 == 0 else rng.uniform(0, 100_000))
        kind = i % 3
        if kind == 0:
            key, value = (
                f"e|1234567890|Purchase|ev-{i}",
                {"t": t, "cid": f"{i:064x}", "src": "server"},
            )
        elif kind == 1:
            key, value = (
                f"f|1234567890|Purchase|fb.1.1795300000000.{i}",
                {"t": t, "l": [[t, f"{i:064x}"]]},
            )
        else:
            key, value = f"b|{i:064x}", {"t": t, "l": [[t, None]]}
        wb.put(key.encode(), orjson.dumps(value))
        if i % 50_000 == 49_999:
            db.write(wb)
            wb = WriteBatch(raw_mode=True)
    db.write(wb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=700_000)
    ap.add_argument("--step", type=int, default=SWEEP_STEP, help="keys per batch")
    a = ap.parse_args()
    now = 1_795_400_000.0
    with tempfile.TemporaryDirectory() as tmp:
        opts = Options(raw_mode=True)
        opts.set_write_buffer_size(int(ROCKSDB_OPTIONS["write_buffer_size"]))
        db = Rdict(str(Path(tmp) / "p0"), options=opts)
        try:
            fill(db, a.keys, now)
            t = time.perf_counter()
            n = sum(1 for _ in db.items())
            bare = time.perf_counter() - t
            gauge = Gauge("keys", "bench", registry=CollectorRegistry())
            sweeper = Sweeper(
                _Table(db),
                172_800,
                60.0,
                prefixes=STATE_PREFIXES,
                time_key="t",
                gauge=gauge,
                step=a.step,
            )
            sweeper.observe(0, now)
            steps: list[float] = []
            removed = 0
            while True:
                state = _State()
                t = time.perf_counter()
                removed += sweeper.sweep(state, {0: None}, time.time())
                steps.append(time.perf_counter() - t)
                if 0 not in sweeper.cursor:
                    break
            total = sum(steps)
        finally:
            db.close()
    print(f"partition of {n:,} keys; bare iteration {bare:.2f} s ({n / bare:,.0f} keys/s)")
    print(
        f"sweep pass: {total:.2f} s in {len(steps)} batches of {a.step} keys"
        f" ({n / total:,.0f} keys/s); longest batch {1000 * max(steps):.1f} ms;"
        f" {removed:,} expired"
    )
    print(f"ratio pass / bare iteration: {total / bare:.2f}")


if __name__ == "__main__":
    main()
