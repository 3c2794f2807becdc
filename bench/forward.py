"""``convstream forward`` sending speed to the local Graph-compatible endpoint
(tests/graph_endpoint.py, in its own process, validating like Meta), the forwarder
pinned to one core:

1. events/s with 1000-event batches: records decoded from bytes, batched, bodies built
   and sent by the forwarder's Sender; baseline in the same run: bare aiohttp posting
   pre-built bodies of the same events at the same concurrency (the ceiling of HTTP +
   endpoint on this machine);
2. requests per 1000 events when ~30% of requests fail in mixed ways (5xx, codes 1/2,
   429 and 613 with Retry-After, timeouts, resets, slow answers), against the minimum 1.

    python bench/forward.py [EVENTS] [--fault-events N]   (default 100000, 20000)
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.graph_client import Sender, new_session
from bench.traffic import PIXELS, conversions
from streams import forward as fwd
from streams.runtime import tune_gc
from streams.settings import Forward

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {PIXELS[0]: "EAAbenchA", PIXELS[1]: "EAAbenchB"}
META_NOW = 1795404000.0
CONCURRENCY = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_endpoint(fault_rate: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    tokens = ",".join(f"{p}={t}" for p, t in TOKENS.items())
    cmd = [sys.executable, "-m", "tests.graph_endpoint", "--port", str(port)]
    cmd += ["--tokens", tokens, "--now", str(META_NOW), "--retry-after", "0.05"]
    cmd += ["--fault-rate", str(fault_rate), "--timeout-sleep", "0.5", "--slow-sleep", "0.05"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # "listening on ..."
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {1})
    return proc, f"http://127.0.0.1:{port}"


def records(n: int) -> list[bytes]:
    """n distinct conversion records (a few thousand generated, then event ids varied)."""
    base = conversions(min(n, 4000))
    out = []
    for k in range(n):
        rec = dict(base[k % len(base)])
        rec["event_id"] = f"{rec['event_id'] or rec['conversion_id']}-{k // len(base)}"
        out.append(orjson.dumps(rec))
    return out


async def forwarder(raw: list[bytes], fw: Forward) -> tuple[float, int, int, float]:
    """Decode, batch and send as the stream does (a full batch leaves at once, while
    the next is decoded); (seconds, requests, rejected, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    batcher = fwd.Batcher(fw.batch_size, fw.linger)
    async with new_session(fw) as session:
        sender = Sender(fw, session)
        tasks = []
        for n, r in enumerate(raw):
            item = fwd.decode(r, 0, n)
            if isinstance(item, fwd.Item) and (full := batcher.add(item, 0.0)) is not None:
                tasks.append(asyncio.create_task(sender.deliver(full)))
                await asyncio.sleep(0)  # let the request start, as the stream's loop does
        tasks += [asyncio.create_task(sender.deliver(b)) for b in batcher.drain()]
        results = await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, sender.requests, sum(len(r) for r in results), cpu


async def bare(raw: list[bytes], url: str) -> tuple[float, float]:
    """Baseline: bodies built before the clock starts, posted at the same concurrency."""
    items = [t for n, r in enumerate(raw) if isinstance(t := fwd.decode(r, 0, n), fwd.Item)]
    bodies = [
        (
            b.pixel_id,
            fwd.encode_body(
                fwd.request_body((i.event for i in b.items), b.test_event_code), TOKENS[b.pixel_id]
            ),
        )
        for b in fwd.chunks(items)
    ]
    sem = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:

        async def post(pixel: str, body: bytes) -> None:
            async with sem, s.post(f"{url}/v24.0/{pixel}/events", data=body) as r:
                await r.read()
                assert r.status == 200, r.status

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(post(p, b) for p, b in bodies))
        return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    n_fault = 20_000
    if "--fault-events" in sys.argv:
        n_fault = int(sys.argv[sys.argv.index("--fault-events") + 1])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    raw = records(n)
    tune_gc()  # as `convstream forward` does
    proc, url = start_endpoint()
    fw = Forward(graph_url=url, access_tokens=tuple(TOKENS.items()), concurrency=CONCURRENCY)
    try:
        asyncio.run(forwarder(raw[:5000], fw))  # warm-up
        best_fw = best_bare = cpu_fw = cpu_bare = float("inf")
        for _ in range(3):
            secs, requests, rejected, cpu = asyncio.run(forwarder(raw, fw))
            assert rejected == 0, rejected
            best_fw, cpu_fw = min(best_fw, secs), min(cpu_fw, cpu)
            b_secs, b_cpu = asyncio.run(bare(raw, url))
            best_bare, cpu_bare = min(best_bare, b_secs), min(cpu_bare, b_cpu)
    finally:
        proc.terminate()
        proc.wait()
    print(f"{n} events, batches of 1000 ({requests} requests), concurrency {CONCURRENCY}")
    print(
        f"forward: {n / best_fw:,.0f} events/s on one core; bare aiohttp with pre-built "
        f"bodies: {n / best_bare:,.0f} events/s; forward / baseline = {best_bare / best_fw:.2f}"
    )
    print(
        f"CPU of the sending process: forward {cpu_fw / n * 1e6:.1f} us/event "
        f"({n / cpu_fw:,.0f} events per CPU-second), bare {cpu_bare / n * 1e6:.1f} us/event "
        "(wall figures depend on what else runs on the machine; CPU figures less so)"
    )

    proc, url = start_endpoint(fault_rate=0.3)
    ffw = Forward(
        graph_url=url,
        access_tokens=tuple(TOKENS.items()),
        concurrency=CONCURRENCY,
        timeout=0.25,
        retry_base=0.01,
        retry_max=0.2,
    )
    try:
        secs, requests, rejected, _ = asyncio.run(forwarder(raw[:n_fault], ffw))
    finally:
        proc.terminate()
        proc.wait()
    batches = -(-n_fault // 1000)
    print(
        f"30% faults: {n_fault} events in {secs:.1f}s, {requests} requests = "
        f"{requests / n_fault * 1000:.2f} per 1000 events (fault-free minimum "
        f"{batches / n_fault * 1000:.2f}; one event per request: 1000), {rejected} rejected"
    )


if __name__ == "__main__":
    main()
