"""End-to-end throughput through a real broker: the convstream worker vs a bare aiokafka
consume→produce passthrough of the same messages (the ceiling of this stack).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python bench/e2e.py [--messages M] [--partitions P]
        [--batch-size N] [--loop uvloop|asyncio] [--workers W] [--skip-passthrough]

Both read the same M pre-produced raw server events (one event per message, distinct
event ids, raw PII to hash). Throughput = M / (time from first consumption to the last
output acknowledged). Prints events/s for each and, as the last line, their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import kafka_io  # noqa: E402
from bench import traffic  # noqa: E402
from streams.settings import Topics, from_env, to_env  # noqa: E402


def message(i: int) -> bytes:
    """One raw server body with one event (distinct event ids, raw PII to hash)."""
    return traffic.server_message(i, random.Random(i))


async def total_end(bootstrap: str, topic: str) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        await c._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        return sum((await c.end_offsets(tps)).values()) if tps else 0
    finally:
        await c.stop()


async def passthrough(bootstrap: str, src: str, dst: str, m: int) -> float:
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=f"bench-pass-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    n = 0
    t0 = None
    try:
        while n < m:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batch:
                continue
            if t0 is None:
                t0 = time.perf_counter()
            futs = []
            for recs in batch.values():
                for r in recs:
                    futs.append(await producer.send(dst, r.value, key=r.key))
            await asyncio.gather(*futs)
            await consumer.commit()
            n += len(futs)
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


async def outputs_done(s) -> int:  # type: ignore[no-untyped-def]
    """Every input event ends as a conversion or a dead letter (one event per message)."""
    conv = await total_end(s.bootstrap_servers, s.topics.conversions)
    return conv + await total_end(s.bootstrap_servers, s.topics.dead_letter)


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def run_workers(s, m: int, loop: str, log: Path, workers: int) -> float:  # type: ignore[no-untyped-def]
    """Start ``workers`` worker processes in one consumer group; time until all M events
    came out (from the moment the first one is ready)."""
    procs = []
    urls = []
    for i in range(workers):
        si = s.with_overrides(web_port=free_port(), data_dir=f"{s.data_dir}-{i}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSTREAM_")}
        env.update(to_env(si), PYTHONPATH=str(REPO))
        with log.with_suffix(f".{i}.log").open("wb") as fh:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", "worker", "--loop", loop],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            )
        urls.append(f"http://{si.web_host}:{si.web_port}/readyz")
    try:
        t_wait = time.time()
        while not any(ready(u) for u in urls):
            if any(p.poll() is not None for p in procs) or time.time() - t_wait > 120:
                raise SystemExit(f"a worker did not start; see {log}.*.log")
            time.sleep(0.05)
        t0 = time.perf_counter()
        while True:
            if asyncio.run(outputs_done(s)) >= m:
                elapsed = time.perf_counter() - t0
                for i, p in enumerate(procs):
                    print(f"worker {i} RSS at the end: {rss_mib(p.pid):,.0f} MiB")
                return elapsed
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker died; see {log}.*.log")
            time.sleep(0.25)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=600_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in one group")
    ap.add_argument("--skip-passthrough", action="store_true")
    a = ap.parse_args()
    base = from_env()
    run = uuid.uuid4().hex[:8]
    topics = Topics(
        pixel_raw=f"bench{run}.pixel.raw",
        server_raw=f"bench{run}.server.raw",
        catalog=f"bench{run}.catalog",
        conversions=f"bench{run}.conversions",
        candidates=f"bench{run}.candidates",
        dead_letter=f"bench{run}.dead_letter",
    )
    s = base.with_overrides(
        app_id=f"convstream-bench-{run}",
        topics=topics,
        partitions=a.partitions,
        batch_size=a.batch_size,
        web_port=free_port(),
        data_dir=f"/tmp/convstream-bench-{run}",
    )
    names = [
        topics.pixel_raw,
        topics.server_raw,
        topics.catalog,
        topics.conversions,
        topics.candidates,
        topics.dead_letter,
        f"bench{run}.passthrough",
    ]
    asyncio.run(kafka_io.create_topics(s, names))
    t = time.perf_counter()
    values = [message(i) for i in range(a.messages)]
    asyncio.run(kafka_io.produce(s, topics.server_raw, values))
    print(
        f"produced {a.messages} raw server events ({sum(map(len, values)) / a.messages:.0f} B avg)"
        f" to {a.partitions} partitions in {time.perf_counter() - t:.1f}s"
    )
    del values
    if not a.skip_passthrough:
        el = asyncio.run(
            passthrough(
                s.bootstrap_servers, topics.server_raw, f"bench{run}.passthrough", a.messages
            )
        )
        pt = a.messages / el
        print(f"bare aiokafka passthrough : {pt:>9,.0f} events/s  ({el:.1f}s)")
    log = Path(f"/tmp/convstream-bench-{run}.log")
    el = run_workers(s, a.messages, a.loop, log, a.workers)
    wk = a.messages / el
    label = f"convstream worker x{a.workers} ({a.loop}, batch {a.batch_size})"
    print(f"{label}: {wk:>9,.0f} events/s  ({el:.1f}s)")
    if not a.skip_passthrough:
        print(f"ratio worker/passthrough: {wk / pt:.2f}")


if __name__ == "__main__":
    main()
