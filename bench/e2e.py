"""End-to-end throughput and latency through a real broker: the convstream worker vs a
bare aiokafka consume→produce passthrough of the same raw messages (the ceiling of this
stack), in the same run.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python bench/e2e.py [--messages M]
        [--partitions P] [--batch-size N] [--loop uvloop|asyncio] [--workers W]
        [--latency-seconds S] [--rate R] [--skip-passthrough] [--passthrough-compression C]

Traffic: ``bench/traffic.py`` ``mixed`` (pixel hits and CAPI bodies with raw PII,
browser/server pairs, retries, id-less copies, landing hits, a few invalid events),
pre-produced to the two raw topics.

- Passthrough: one aiokafka consumer over both raw topics, producing every message to
  another topic and committing after the acks. Time from its first fetch to its last ack.
  Its producer compresses nothing unless ``--passthrough-compression`` says so (the
  worker's codec is ``CONVSTREAM_COMPRESSION``, default zstd; the report names it).
- Worker (ingest + dedup + attribution, rocksdb://): time from its first consumption
  (its ``convstream_messages_in_total`` moves) to the last output record it wrote (the
  largest record timestamp in conversions, candidates and dead letters) once every stage
  has processed everything: ingest read all M messages and dedup decided every valid
  event (counted offline from the same messages). Bounded: a stage that stops moving for
  ``--stall`` seconds ends the run with an error.
- Per-stage rates: events each stage processed per second of its own batch time
  (``convstream_batch_duration_seconds``): what a stage could do alone on this core.
- CPU: the worker's CPU seconds (from /proc) per 1000 messages, next to the
  passthrough's: a figure that depends less on what else the machine runs.
- Latency: then, for ``--latency-seconds``, new messages are produced at half the
  worker's measured rate (or ``--rate``); raw produce time → conversion record time,
  p50 / p99. The load generator shares the machine, so it is light and says what it
  used: the conversion ids of its messages are computed before the clock starts, it
  sends a batch per partition every 2 ms, and matches outputs by id (record keys, the
  first bytes of a group line) without decoding them. (Producing one message at a time
  and decoding every output, as before, took 0.40 of a core at 4,000 msg/s; now ~0.23.)
- RSS of the worker at the end.

The last line is the ratio worker / passthrough events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import kafka_io  # noqa: E402
from bench import traffic  # noqa: E402
from streams.model import Origin  # noqa: E402
from streams.pipeline import Pipeline, Result  # noqa: E402
from streams.settings import Settings, Topics, from_env, to_env  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (the worker and its ingest process), from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, from /proc (Linux)."""
    total = 0.0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_mib(pid: int, alone: bool = False) -> float:
    """Resident memory of a process and its descendants (``alone``: of the process)."""
    total = 0.0
    for p in [pid] if alone else family(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total if total else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), ""
    except OSError:
        return 0, ""


def candidates_count(s: Settings, msgs: list[tuple[str, bytes]]) -> int:
    """Valid events the ingest stage hands to dedup (order does not matter here)."""
    return sum(len(ids) for ids in expected_ids(s, msgs))


def expected_ids(s: Settings, msgs: list[tuple[str, bytes]]) -> list[list[bytes]]:
    """The conversion ids each message becomes (the offline pipeline, before timing):
    the harness then matches outputs by id, without decoding them."""
    pipeline, out = Pipeline(s), Result()
    ids: list[list[bytes]] = []
    for i, (source, value) in enumerate(msgs):
        out.conversions.clear()
        pipeline.process(source, value, Origin("raw", 0, i), time.time(), out)  # type: ignore[arg-type]
        ids.append([c["conversion_id"].encode() for c in out.conversions])
    return ids


def produce(s: Settings, msgs: list[tuple[str, bytes]]) -> None:
    pixel = [v for src, v in msgs if src == "browser"]
    server = [v for src, v in msgs if src == "server"]
    asyncio.run(kafka_io.produce(s, s.topics.pixel_raw, pixel))
    asyncio.run(kafka_io.produce(s, s.topics.server_raw, server))


async def passthrough(
    s: Settings, dst: str, m: int, compression: str | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to move m messages."""
    kw = kafka_io.client_kwargs(s)
    consumer = AIOKafkaConsumer(
        s.topics.pixel_raw,
        s.topics.server_raw,
        group_id=f"bench-pass-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=1000,
        **kw,
    )
    producer = AIOKafkaProducer(
        linger_ms=5, max_batch_size=256 * 1024, compression_type=compression, **kw
    )
    await consumer.start()
    await producer.start()
    n = 0
    t0 = c0 = None
    try:
        while n < m:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batch:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            futs = []
            for recs in batch.values():
                for r in recs:
                    futs.append(await producer.send(dst, r.value, key=r.key))
            await asyncio.gather(*futs)
            await consumer.commit()
            n += len(futs)
        assert t0 is not None and c0 is not None
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        await consumer.stop()
        await producer.stop()


async def last_timestamp(s: Settings, topics: list[str]) -> float:
    """The largest record timestamp (s) at the end of each partition of ``topics`` (each
    has ``s.partitions`` partitions: made by this bench)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka_io.client_kwargs(s))
    await consumer.start()
    latest = 0.0
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        tps = [tp for tp in tps if ends[tp] > 0]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp] - 1)
        todo = set(tps)
        while todo:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, recs in batch.items():
                for r in recs:
                    latest = max(latest, r.timestamp / 1000)
                todo.discard(tp)
    finally:
        await consumer.stop()
    return latest


class Worker:
    def __init__(self, s: Settings, i: int, loop: str, log: Path) -> None:
        self.s = s.with_overrides(web_port=free_port(), data_dir=f"{s.data_dir}-{i}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSTREAM_")}
        env.update(to_env(self.s), PYTHONPATH=str(REPO))
        self.log = log.with_suffix(f".{i}.log")
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loop", loop],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://{self.s.web_host}:{self.s.web_port}"

    def metrics(self) -> str:
        return get(f"{self.url}/metrics")[1]

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"a worker died; see {self.log}")


def metric(workers: list[Worker], name: str, **labels: str) -> float:
    """Sum of the samples ``name`` with ``labels`` over the workers' /metrics."""
    total = 0.0
    for w in workers:
        for family in text_string_to_metric_families(w.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
    return total


def wait_until(
    what: str, value: Any, target: float, workers: list[Worker], stall: float, every: float
) -> float:
    """Poll ``value()`` (one /metrics scrape) every ``every`` s until it reaches
    ``target``; fail when it has not moved for ``stall`` seconds. Returns the time it got
    there. (Each scrape costs the worker CPU: poll no faster than the figure needs.)"""
    last, last_move = value(), time.monotonic()
    while last < target:
        for w in workers:
            w.check()
        time.sleep(every)
        now = value()
        if now != last:
            last, last_move = now, time.monotonic()
        elif time.monotonic() - last_move > stall:
            raise SystemExit(f"no progress for {stall}s waiting for {what}; see the worker logs")
    return time.perf_counter()


def batch_counts(workers: list[Worker]) -> dict[str, tuple[float, float, float]]:
    """stage -> (events, batches, seconds of batch time) so far."""
    out = {}
    for stage in ("ingest", "dedup", "attribution"):
        out[stage] = (
            metric(workers, "convstream_batch_size_sum", stage=stage),
            metric(workers, "convstream_batch_size_count", stage=stage),
            metric(workers, "convstream_batch_duration_seconds_sum", stage=stage),
        )
    return out


def batch_rates(workers: list[Worker]) -> dict[str, tuple[float, float]]:
    """stage -> (events, seconds of batch time)."""
    out = {}
    for stage in ("ingest", "dedup", "attribution"):
        n = metric(workers, "convstream_batch_size_sum", stage=stage)
        t = metric(workers, "convstream_batch_duration_seconds_sum", stage=stage)
        if t > 0:
            out[stage] = (n, t)
    return out


TICK = 0.002  # the load generator sends what is due every 2 ms, a batch per partition
_CID = b'{"conversion_id":"'  # how every conversion line starts (streams/records.py)


async def latency(
    s: Settings, rate: float, seconds: float, first: int
) -> tuple[dict[str, list[float]], int, float]:
    """Produce new mixed messages at ``rate``/s for ``seconds``; return the latencies (s)
    of their events from the raw produce to the ingest stage's output (``dedup-in``) and
    to the conversion, how many messages were produced, and the harness's own CPU
    seconds meanwhile (it shares the machine with the worker, so it is kept light:
    batches per partition every ``TICK``, outputs matched by conversion id, from the
    record key or the first bytes of a group line, never decoded)."""
    msgs = traffic.mixed(int(rate * seconds), seed=first, start=first)
    ids = expected_ids(s, msgs)
    kw = kafka_io.client_kwargs(s)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kw)
    producer = AIOKafkaProducer(linger_ms=0, max_batch_size=256 * 1024, **kw)
    await consumer.start()
    await producer.start()
    sent: dict[bytes, float] = {}
    lat: dict[str, list[float]] = {"ingested": [], "conversion": []}
    dedup_in = f"{s.app_id}-dedup-in"
    cpu0 = time.process_time()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (s.topics.conversions, dedup_in)
            for p in range(s.partitions)
        ]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])

        async def read() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                for tp, recs in batch.items():
                    ingested = tp.topic == dedup_in
                    hop = lat["ingested" if ingested else "conversion"]
                    for r in recs:
                        ts = r.timestamp / 1000
                        if not ingested:
                            t = sent.get(r.key or b"")
                            if t is not None:
                                hop.append(ts - t)
                            continue
                        for line in (r.value or b"").split(b"\n"):
                            if line.startswith(_CID):
                                t = sent.get(line[len(_CID) : len(_CID) + 64])
                                if t is not None:
                                    hop.append(ts - t)

        reader = asyncio.create_task(read())
        t0 = time.time()
        i, n = 0, len(msgs)
        while i < n:
            now = time.time()
            due = min(n, int((now - t0) * rate) + 1)
            parts: dict[tuple[str, int], Any] = {}
            for j in range(i, due):
                source, value = msgs[j]
                topic = s.topics.pixel_raw if source == "browser" else s.topics.server_raw
                key = (topic, j % s.partitions)
                b = parts.get(key)
                if b is None:
                    b = parts[key] = producer.create_batch()
                b.append(key=None, value=value, timestamp=None)
                for cid in ids[j]:
                    sent.setdefault(cid, now)
            i = due
            await asyncio.gather(
                *[producer.send_batch(b, t, partition=p) for (t, p), b in parts.items()]
            )
            await asyncio.sleep(max(0.0, t0 + i / rate - time.time(), TICK))
        await producer.flush()
        await asyncio.sleep(3.0)  # the last ones come out
        reader.cancel()
    finally:
        await producer.stop()
        await consumer.stop()
    return lat, len(msgs), time.process_time() - cpu0


def run_topics(prefix: str) -> Topics:
    """The topics of one benchmark run: ``<prefix>.pixel.raw`` and so on."""
    return Topics(
        pixel_raw=f"{prefix}.pixel.raw",
        server_raw=f"{prefix}.server.raw",
        catalog=f"{prefix}.catalog",
        conversions=f"{prefix}.conversions",
        candidates=f"{prefix}.candidates",
        dead_letter=f"{prefix}.dead_letter",
    )


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in one group")
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="0: no latency phase")
    ap.add_argument("--stall", type=float, default=60.0, help="give up after S s without progress")
    ap.add_argument("--skip-passthrough", action="store_true")
    ap.add_argument(
        "--passthrough-compression",
        choices=("none", "gzip", "snappy", "lz4", "zstd"),
        default="none",
        help="codec of the passthrough's producer (default none: aiokafka's own default)",
    )
    ap.add_argument(
        "--rate", type=float, default=0.0, help="latency phase messages/s (0: half the measured)"
    )
    a = ap.parse_args()
    base = from_env()
    run = uuid.uuid4().hex[:8]
    topics = run_topics(f"bench{run}")
    s = base.with_overrides(
        app_id=f"convstream-bench-{run}",
        topics=topics,
        partitions=a.partitions,
        batch_size=a.batch_size,
        data_dir=f"/tmp/convstream-bench-{run}",
    )
    outputs = [topics.conversions, topics.candidates, topics.dead_letter]
    passthrough_topic = f"bench{run}.passthrough"
    names = [topics.pixel_raw, topics.server_raw, topics.catalog, *outputs, passthrough_topic]
    asyncio.run(kafka_io.create_topics(s, names))
    msgs = traffic.mixed(a.messages)
    m = len(msgs)
    t = time.perf_counter()
    produce(s, msgs)
    pixel = sum(1 for src, _ in msgs if src == "browser")
    size = sum(len(v) for _, v in msgs) / m
    print(
        f"produced {m} raw messages ({pixel} pixel hits, {m - pixel} CAPI bodies, {size:.0f} B"
        f" avg) to {a.partitions} partitions in {time.perf_counter() - t:.1f}s"
    )
    expected = candidates_count(s, msgs)
    del msgs
    pt = 0.0
    if not a.skip_passthrough:
        codec = None if a.passthrough_compression == "none" else a.passthrough_compression
        wall, cpu = asyncio.run(passthrough(s, passthrough_topic, m, codec))
        pt = m / wall
        print(
            f"bare aiokafka passthrough : {pt:>9,.0f} messages/s  ({wall:.1f}s,"
            f" {1000 * cpu / m:.3f} CPU s per 1000 messages, compression"
            f" {a.passthrough_compression})"
        )
    log = Path(f"/tmp/convstream-bench-{run}.log")
    workers = [Worker(s, i, a.loop, log) for i in range(a.workers)]
    try:
        t_wait = time.time()
        while not any(get(f"{w.url}/readyz")[0] == 200 for w in workers):
            for w in workers:
                w.check()
            if time.time() - t_wait > 120:
                raise SystemExit(f"no worker ready in 120 s; see {log}.*.log")
            time.sleep(0.05)
        cpu0 = [cpu_seconds(w.proc.pid) for w in workers]

        def read_in() -> float:
            return metric(workers, "convstream_messages_in_total")

        def decided() -> float:
            return metric(workers, "convstream_batch_size_sum", stage="dedup")

        # the start is timed to 20 ms; the ends come from the outputs' record timestamps
        t0 = wait_until("first consumption", read_in, 1, workers, a.stall, every=0.02)
        t0_epoch = time.time() - (time.perf_counter() - t0)
        wait_until("ingest", read_in, m, workers, a.stall, every=0.5)
        wait_until("dedup", decided, expected, workers, a.stall, every=0.5)

        def attributed() -> float:
            return metric(workers, "convstream_batch_size_sum", stage="attribution")

        # attribution has no count known in advance: done when it stops moving for 2 s
        quiet, last = time.monotonic(), attributed()
        while time.monotonic() - quiet < 2.0:
            time.sleep(0.5)
            if (now := attributed()) != last:
                quiet, last = time.monotonic(), now
        cpu = sum(cpu_seconds(w.proc.pid) - c for w, c in zip(workers, cpu0, strict=True))
        end = asyncio.run(last_timestamp(s, outputs))
        el = end - t0_epoch
        wk = m / el
        label = (
            f"convstream worker x{a.workers} ({a.loop}, batch {a.batch_size},"
            f" compression {s.compression})"
        )
        print(
            f"{label}: {wk:>9,.0f} messages/s  ({el:.1f}s, {expected} valid events;"
            f" {1000 * cpu / m:.3f} CPU s per 1000 messages, idle included)"
        )
        for stage, (n, secs) in batch_rates(workers).items():
            rate_s = f"{n / secs:>9,.0f} events/s of batch time"
            print(f"  stage {stage:<18} {rate_s} ({n:.0f} in {secs:.1f}s)")
        if a.latency_seconds > 0:
            rate = a.rate or max(1.0, wk / 2)
            before = batch_counts(workers)
            cpu_l = sum(cpu_seconds(w.proc.pid) for w in workers)
            lat, sent, cpu_h = asyncio.run(latency(s, rate, a.latency_seconds, first=10 * m))
            cpu_l = sum(cpu_seconds(w.proc.pid) for w in workers) - cpu_l
            for hop, xs in lat.items():
                print(
                    f"latency raw -> {hop} at {rate:,.0f} messages/s ({sent} messages,"
                    f" {len(xs)} events): p50 {1000 * pct(xs, 0.5):.0f} ms,"
                    f" p99 {1000 * pct(xs, 0.99):.0f} ms"
                )
            after = batch_counts(workers)
            print(
                f"  live: {1000 * cpu_l / sent:.3f} CPU s per 1000 messages (the 3 s after"
                " the last message included); the load generator and reader used"
                f" {1000 * cpu_h / sent:.3f}"
            )
            for stage, (n, count, secs) in after.items():
                n0, c0, s0 = before.get(stage, (0.0, 0.0, 0.0))
                if count > c0:
                    print(
                        f"  live stage {stage:<13} {(count - c0) / a.latency_seconds:,.0f}"
                        f" batches/s, {(n - n0) / (count - c0):,.1f} events per batch,"
                        f" {1000 * (secs - s0) / (count - c0):.1f} ms per batch"
                    )
        for i, w in enumerate(workers):
            parts = " + ".join(f"{rss_mib(p, alone=True):,.0f}" for p in family(w.proc.pid))
            print(f"worker {i} RSS at the end: {rss_mib(w.proc.pid):,.0f} MiB ({parts})")
    finally:
        for w in workers:
            w.proc.terminate()
        for w in workers:
            w.proc.wait(30)
    if not a.skip_passthrough:
        print(f"ratio worker/passthrough: {wk / pt:.2f}")


if __name__ == "__main__":
    main()
