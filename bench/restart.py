"""Restarts, restores and standby takeovers through a real broker (issue: fast restarts).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python bench/restart.py [--messages M]
        [--partitions P] [--before] [--no-empty] [--no-standby]

1. A worker (rocksdb://) processes M raw messages of ``bench/traffic.py`` ``mixed``
   traffic; it is stopped cleanly (SIGTERM). Printed: the live dedup keys (counted in its
   RocksDB files) and, per changelog partition, the records the changelog holds and the
   offset the store persisted.
2. **Same data directory**: the worker starts again; times start → ``/readyz`` 200 and
   start → the first conversion of a few fresh messages (produced once it is ready), and
   prints the changelog records Faust's recovery read per partition (from its
   "Reading Starts At" / "Highwater" log tables).
3. ``--before``: the same after deleting the persisted offsets from the stores (how it
   was before the stages kept them: a full replay over the existing store).
4. **Empty data directory** (a new machine): the same, plus the restore's duration (from
   Faust's "Restoring state" to "Done reading" log lines) and its rate in changelog
   records/s and live keys/s.
5. **Standby takeover** (``CONVSTREAM_STANDBY_REPLICAS=1``): worker A on the data
   directory of (1) and worker B on an empty one join one group; B restores its active
   partitions and builds warm copies (standbys) of A's. Once B's copies reached the
   changelog ends, M/20 more messages are processed, A is killed (SIGKILL) and fresh
   messages are produced. Printed: kill → B ready again (its log), kill → every fresh
   conversion out, and the changelog records B's takeover recovery read per partition
   next to what a cold takeover would have read. The takeover includes the consumer
   group noticing the dead member: Faust's session timeout (60 s by default).

Every figure depends on the machine's load: the script prints the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import kafka_io  # noqa: E402
from agents.dedupe import STATE_PREFIXES  # noqa: E402
from bench import traffic  # noqa: E402
from bench.e2e import (  # noqa: E402
    Worker,
    candidates_count,
    get,
    metric,
    produce,
    rss_mib,
    run_topics,
    wait_until,
)
from bench.stores import (  # noqa: E402
    Recovery,
    drop_persisted_offset,
    log_times,
    persisted_offset,
    read_store,
    recoveries,
)
from streams.settings import Settings, from_env  # noqa: E402

TABLES = ("dedup", "landing")  # the stateful stages' tables (agents/dedupe.py, attribution.py)
CHUNK = 50_000  # messages generated and produced at a time
STARTED: list[Worker] = []  # every worker this run started: stopped at exit, whatever happens


def start(s: Settings, index: int, log: Path) -> Worker:
    """A worker on data directory ``index`` (``<data_dir>-<index>``), logging to ``log``."""
    w = Worker(s, index, "uvloop", log)
    STARTED.append(w)
    return w


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def changelog(s: Settings, table: str) -> str:
    return f"{s.app_id}-{table}-changelog"


def ends(s: Settings) -> dict[tuple[str, int], int]:
    out = {}
    for table in TABLES:
        topic = changelog(s, table)
        for p, end in asyncio.run(kafka_io.end_offsets(s, topic)).items():
            out[(topic, p)] = end
    return out


def fresh(n: int, start: int) -> list[tuple[str, bytes]]:
    """n CAPI bodies of one event each, with event ids no other message has."""
    import random

    rng = random.Random(start)
    return [("server", traffic.server_message(i, rng)) for i in range(start, start + n)]


async def first_conversions(
    s: Settings, msgs: list[tuple[str, bytes]], timeout: float
) -> list[float]:
    """Produce ``msgs``; the times (time.time()) at which their conversions were read,
    in order, until all that ``candidates_count`` expects came out or ``timeout``."""
    want = {eid for _, v in msgs for eid in traffic.event_ids(v)}
    expected = candidates_count(s, msgs)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka_io.client_kwargs(s))
    await consumer.start()
    seen: list[float] = []
    try:
        tps = [TopicPartition(s.topics.conversions, p) for p in range(s.partitions)]
        end = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, end[tp])
        await kafka_io.produce(s, s.topics.server_raw, [v for _, v in msgs])
        deadline = time.time() + timeout
        while len(seen) < expected and time.time() < deadline:
            batch = await consumer.getmany(timeout_ms=50)
            for recs in batch.values():
                for r in recs:
                    if orjson.loads(r.value or b"{}").get("event_id") in want:
                        seen.append(time.time())
    finally:
        await consumer.stop()
    return seen


def since(times: list[float], t0: float) -> float:
    """Seconds from ``t0`` to the first of ``times`` (nan when there is none)."""
    return times[0] - t0 if times else float("nan")


def wait_ready(w: Worker, timeout: float = 3600) -> float:
    t0 = time.time()
    while get(f"{w.url}/readyz")[0] != 200:
        w.check()
        if time.time() - t0 > timeout:
            raise SystemExit(f"not ready in {timeout} s; see {w.log}")
        time.sleep(0.02)
    return time.time()


def stop(w: Worker, sig: int = signal.SIGTERM) -> float:
    t0 = time.time()
    w.proc.send_signal(sig)
    w.proc.wait(120)
    return time.time() - t0


def print_recovery(rec: Recovery, mark: frozenset[tuple[str, int]] = frozenset()) -> None:
    """Records read per changelog partition, of those the changelog holds (what a
    recovery into an empty store reads); partitions in ``mark`` are marked."""
    for tp in sorted(rec.highwater):
        table = tp[0].rsplit("-", 2)[-2]
        print(
            f"    {table:<8} partition {tp[1]}: read {rec.records_read(tp):>9,} of"
            f" {rec.highwater[tp] + 1:>9,} records, from offset {rec.start.get(tp, -1)}"
            + (" (taken over)" if tp in mark else "")
        )


def restart(
    s: Settings, index: int, label: str, log: Path, n_fresh: int, seed: int
) -> tuple[Recovery, float | None]:
    """Start a worker on data directory ``index``, time it, stop it; (its recovery, the
    seconds Faust's restore took, None when nothing needed restoring)."""
    t0 = time.time()
    w = start(s, index, log.with_name(f"{log.stem}-{label}.log"))
    ready = wait_ready(w)
    seen = asyncio.run(first_conversions(s, fresh(n_fresh, seed), timeout=120))
    recs = recoveries(w.log)
    restore = restore_seconds(w.log)
    stop(w)
    print(
        f"\n{label}: start -> /readyz {ready - t0:.1f} s; start -> first new conversion"
        f" {since(seen, t0):.1f} s (last {since(seen[-1:], t0):.1f} s: {len(seen)}"
        f" conversions of {n_fresh} fresh messages); {load()}"
    )
    if restore is not None:
        print(f"  Faust's restore (Restoring state -> Done reading): {restore:.1f} s")
    rec = recs[0] if recs else Recovery(ts=0.0)
    print(f"  recovery read {rec.total_read():,} changelog records:")
    print_recovery(rec)
    return rec, restore


def restore_seconds(log: Path) -> float | None:
    begin = log_times(log, "Restoring state from changelog topics")
    done = log_times(log, "Done reading from changelog topics")
    return done[0] - begin[0] if begin and done else None


def live_keys(data_dir: str, partitions: int) -> int:
    return sum(read_store(data_dir, "dedup", p, STATE_PREFIXES)[1] for p in range(partitions))


def counts(workers: list[Worker]) -> tuple[float, float]:
    """(messages ingest read, events dedup decided) over the workers."""
    return (
        metric(workers, "convstream_messages_in_total"),
        metric(workers, "convstream_batch_size_sum", stage="dedup"),
    )


def process(workers: list[Worker], target: tuple[float, float], stall: float) -> None:
    """Wait until the workers' counts (``counts``) reach ``target`` and attribution has
    been quiet for 2 s."""

    def read_in() -> float:
        return metric(workers, "convstream_messages_in_total")

    def decided() -> float:
        return metric(workers, "convstream_batch_size_sum", stage="dedup")

    wait_until("ingest", read_in, target[0], workers, stall, every=0.5)
    wait_until("dedup", decided, target[1], workers, stall, every=0.5)
    quiet, last = time.monotonic(), -1.0
    while time.monotonic() - quiet < 2.0:
        time.sleep(0.1)
        if (now := metric(workers, "convstream_batch_size_sum", stage="attribution")) != last:
            quiet, last = time.monotonic(), now


def traffic_in(s: Settings, m: int, first: int) -> int:
    """Produce m mixed messages numbered from ``first``; the valid events dedup gets."""
    expected = 0
    for start in range(first, first + m, CHUNK):
        msgs = traffic.mixed(min(CHUNK, first + m - start), seed=start, start=start)
        produce(s, msgs)
        expected += candidates_count(s, msgs)
    return expected


def caught_up(s: Settings, data_dir: str, target: dict[tuple[str, int], int]) -> Callable[[], bool]:
    """Whether the stores of ``data_dir`` hold every changelog partition up to ``target``
    (end offsets), within Faust's standby buffer (it writes a standby's records in
    batches of ``standby_buffer_size``, 1000 by default, per table)."""

    def check() -> bool:
        for table in TABLES:
            behind = 0
            for (topic, p), end in target.items():
                if topic == changelog(s, table) and end:
                    off = persisted_offset(data_dir, table, p)
                    behind += end - 1 - (-1 if off is None else off)
            if behind > 1000:
                return False
        return True

    return check


def standby_takeover(s: Settings, log: Path, m: int, n_fresh: int, stall: float) -> None:
    s = s.with_overrides(standby_replicas=1)
    a = start(s, 0, log.with_name(f"{log.stem}-standby-a.log"))
    wait_ready(a)
    t0 = time.time()
    b = start(s, 3, log.with_name(f"{log.stem}-standby-b.log"))  # empty dir
    try:
        print(f"\nstandby: B (empty dir) ready {wait_ready(b) - t0:.1f} s after it started")
        joined = recoveries(b.log)[0]
        print(f"  B's first recovery (its active partitions) read {joined.total_read():,} records")
        target = ends(s)
        done = caught_up(s, b.s.data_dir, target)
        while not done():
            a.check()
            b.check()
            time.sleep(1.0)
        print(
            f"  B's standby copies at the changelog ends {time.time() - t0:.1f} s after it started"
        )
        m0, d0 = counts([a, b])
        expected = traffic_in(s, m, first=20 * m)
        process([a, b], (m0 + m, d0 + expected), stall)
        print(f"  then {m:,} more messages processed by A and B; killing A (SIGKILL)")
        t_kill = time.time()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        seen = asyncio.run(first_conversions(s, fresh(n_fresh, 30 * m), timeout=300))
        readies = [t for t in log_times(b.log, "Worker ready") if t > t_kill]
        rebalances = [r for r in recoveries(b.log) if r.ts > t_kill]
        print(
            f"  kill -> B's recovery starts {since([r.ts for r in rebalances], t_kill):.1f} s"
            f" (the group notices the dead member); kill -> B ready again"
            f" {since(readies[-1:], t_kill):.1f} s; kill -> first / last fresh conversion out"
            f" {since(seen, t_kill):.1f} / {since(seen[-1:], t_kill):.1f} s"
            f" ({len(seen)} conversions of {n_fresh} messages); {load()}"
        )
        if rebalances:
            rec = rebalances[-1]
            took = frozenset(tp for tp in rec.highwater if tp not in joined.highwater)
            print(
                f"  B's takeover recovery read {rec.total_read():,} records"
                f" ({len(took)} changelog partitions taken over):"
            )
            print_recovery(rec, took)
    finally:
        for w in (a, b):
            if w.proc.poll() is None:
                stop(w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=500_000, help="~2 live dedup keys each")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--fresh", type=int, default=40, help="fresh messages after each start")
    ap.add_argument("--before", action="store_true", help="also restart without persisted offsets")
    ap.add_argument("--no-empty", action="store_true", help="skip the empty-directory restore")
    ap.add_argument("--no-standby", action="store_true", help="skip the standby takeover")
    ap.add_argument("--stall", type=float, default=120.0)
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    run = uuid.uuid4().hex[:8]
    topics = run_topics(f"restart{run}")
    base = f"/tmp/convstream-restart-{run}"
    s = from_env().with_overrides(
        app_id=f"convstream-restart-{run}",
        topics=topics,
        partitions=a.partitions,
        data_dir=base,
        standby_replicas=0,  # one worker until the standby phase
    )
    outputs = [topics.conversions, topics.candidates, topics.dead_letter]
    names = [topics.pixel_raw, topics.server_raw, topics.catalog, *outputs]
    asyncio.run(kafka_io.create_topics(s, names))
    log = Path(f"{base}.log")
    print(f"{load()}; logs {base}-*.log")
    t = time.time()
    expected = traffic_in(s, a.messages, first=0)
    print(
        f"produced {a.messages:,} raw messages ({expected:,} valid events)"
        f" in {time.time() - t:.1f} s"
    )

    t0 = time.time()
    w = start(s, 0, log.with_name(f"{log.stem}-first.log"))
    ready = wait_ready(w)
    process([w], (a.messages, expected), a.stall)
    print(
        f"first start: /readyz after {ready - t0:.1f} s; processed in {time.time() - ready:.1f} s;"
        f" worker RSS {rss_mib(w.proc.pid):,.0f} MiB"
    )
    print(f"clean stop (SIGTERM) took {stop(w):.1f} s")
    data0 = w.s.data_dir
    keys = live_keys(data0, a.partitions)
    end = ends(s)
    print(
        f"live dedup keys in the store: {keys:,}; changelog records:"
        f" {sum(v for (t, _), v in end.items() if t == changelog(s, 'dedup')):,} dedup,"
        f" {sum(v for (t, _), v in end.items() if t == changelog(s, 'landing')):,} landing"
    )
    for table in TABLES:
        for p in range(a.partitions):
            off = persisted_offset(data0, table, p)
            print(
                f"  {table:<8} partition {p}: changelog end {end[(changelog(s, table), p)]:>9,},"
                f" persisted offset {off}"
            )

    restart(s, 0, "same-dir", log, a.fresh, seed=10 * a.messages)
    if a.before:
        for table in TABLES:
            for p in range(a.partitions):
                drop_persisted_offset(data0, table, p)
        restart(s, 0, "same-dir-without-persisted-offsets", log, a.fresh, seed=11 * a.messages)
    if not a.no_empty:
        rec, secs = restart(s, 1, "empty-dir", log, a.fresh, seed=12 * a.messages)
        if secs:
            print(
                f"  restore rate: {rec.total_read() / secs:,.0f} changelog records/s,"
                f" {keys / secs:,.0f} live dedup keys/s ({keys:,} keys in {secs:.1f} s)"
            )
    if not a.no_standby:
        standby_takeover(s, log, max(1000, a.messages // 20), a.fresh, a.stall)
    for i in range(4):
        shutil.rmtree(f"{base}-{i}", ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for w in STARTED:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
