"""Speed of the ingest stage alone on one core (no Kafka): ``Pipeline.process`` per raw
message (parse, validate, normalize and hash PII, build records) in batches of 1000, as
the worker's ingest loop calls it, plus serialising the records. No dedup, no
attribution, no file I/O: ``bench/offline.py`` times the whole ``convstream process`` path.

    python bench/pipeline.py [N] [--default-gc]   (default 100000 mixed messages)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.traffic import mixed
from streams.model import Origin
from streams.pipeline import Pipeline, Result
from streams.runtime import tune_gc
from streams.settings import Settings
from streams.tally import Tally

BATCH = 1000


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    msgs = mixed(n)
    pipe = Pipeline(Settings(default_phone_country="US"))
    origins = {s: Origin(f"events.{s}.raw", 0, 0) for s in ("browser", "server")}
    if "--default-gc" not in sys.argv:
        tune_gc()
    best = float("inf")
    totals = Tally()
    out_counts = (0, 0)
    for _ in range(3):
        totals = Tally()
        n_conv = n_dead = 0
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            result = Result()
            for source, value in msgs[start : start + BATCH]:
                pipe.process(source, value, origins[source], 0.0, result)  # type: ignore[arg-type]
            for rec in result.conversions:
                orjson.dumps(rec)
            for rec in result.dead_letters:
                orjson.dumps(rec)
            n_conv += len(result.conversions)
            n_dead += len(result.dead_letters)
            totals.update(result.tally)
        best = min(best, time.perf_counter() - t0)
        out_counts = (n_conv, n_dead)
    events = totals.sum_of("events_in")
    print(
        f"{n} messages ({events} events, {out_counts[0]} conversions, {out_counts[1]} dead "
        f"letters, {totals.sum_of('non_conversions')} skipped), batches of {BATCH}"
    )
    print(f"pure pipeline: {n / best:,.0f} messages/s, {events / best:,.0f} events/s on one core")


if __name__ == "__main__":
    main()
