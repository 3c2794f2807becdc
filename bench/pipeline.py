"""Pure per-message pipeline speed on one core (no Kafka): parse, validate, normalize
and hash PII, build records, serialize them.

    python bench/pipeline.py [N]      (default 100000 mixed messages)
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
from streams.settings import Settings


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    msgs = mixed(n)
    pipe = Pipeline(Settings(default_phone_country="US"))
    origins = {s: Origin(f"events.{s}.raw", 0, 0) for s in ("browser", "server")}
    best = float("inf")
    result = Result()
    for _ in range(3):
        result = Result()
        t0 = time.perf_counter()
        for source, value in msgs:
            pipe.process(source, value, origins[source], 0.0, result)  # type: ignore[arg-type]
        for rec in result.conversions:
            orjson.dumps(rec)
        for rec in result.dead_letters:
            orjson.dumps(rec)
        best = min(best, time.perf_counter() - t0)
    t = result.tally
    events = t.sum_of("events_in")
    print(
        f"{n} messages ({events} events, {len(result.conversions)} conversions, "
        f"{len(result.dead_letters)} dead letters, {t.sum_of('non_conversions')} skipped)"
    )
    print(f"pure pipeline: {n / best:,.0f} messages/s, {events / best:,.0f} events/s on one core")


if __name__ == "__main__":
    main()
