"""`convstream collect` under load, against 127.0.0.1 only: pixel hits/s and CAPI
events/s with client-side p50/p99 latency, then the same pixel load with the broker
stopped for 5 s mid-run (every 2xx accounted for in the topic afterwards).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python bench/collect.py [--hits N] [--capi N]
        [--events-per-request E] [--concurrency C] [--outage-seconds S] [--skip-outage]

The collector runs as a subprocess pinned to one core (CPU 0), the load generator in
this process pinned to another (a bare asyncio HTTP/1.1 keep-alive client: a full client
library costs more CPU per request than the server under test). The baseline, measured
in the same run with the same client and concurrency, is GET /healthz (aiohttp without
Kafka): the ratio says how much of the HTTP ceiling the Kafka path keeps. The outage
phase uses a broker of its own (deploy/kafka/kafka.sh on a free port), so the broker
of KAFKA_BOOTSTRAP_SERVERS is never stopped. Bounded: a fixed number of requests per
phase, or a fixed duration for the outage phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import kafka_io  # noqa: E402
from streams.settings import Settings, Topics, from_env, to_env  # noqa: E402

PIXEL = "1234567890"
TOKEN = "bench-token"  # a token of this benchmark's own collector
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))  # kafka.sh's controller port
            except OSError:
                continue
        return port


@dataclass
class Phase:
    name: str
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def window(self, t0: float, t1: float) -> str:
        got = [s for s, e in zip(self.statuses, self.ends, strict=True) if t0 <= e < t1]
        ok = sum(1 for s in got if 200 <= s < 300)
        return f"{len(got)} requests, {ok} x 2xx, {sum(1 for s in got if s == 503)} x 503"

    def ok_ids(self) -> set[str]:
        return {i for i, s in zip(self.ids, self.statuses, strict=True) if 200 <= s < 300}

    def line(self, unit: str = "req", per_request: int = 1) -> str:
        n = len(self.statuses)
        ok = sum(1 for s in self.statuses if 200 <= s < 300)
        lat = sorted(t for t, s in zip(self.latencies, self.statuses, strict=True) if s < 300)
        p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        rate = ok * per_request / self.elapsed if self.elapsed else 0.0
        codes: dict[int, int] = {}
        for s in self.statuses:
            codes[s] = codes.get(s, 0) + 1
        code_txt = ", ".join(f"{c}: {k}" for c, k in sorted(codes.items()))
        return (
            f"{self.name:<22} {rate:>9.0f} {unit}/s  2xx p50 {p50:6.2f} ms  "
            f"p99 {p99:6.2f} ms  {n} requests in {self.elapsed:.2f}s  [{code_txt}]"
        )


async def load(
    port: int,
    make: Callable[[int], tuple[bytes, str]],
    *,
    total: int | None,
    duration: float | None,
    concurrency: int,
    name: str,
    until: asyncio.Event | None = None,
) -> Phase:
    """``concurrency`` keep-alive connections send ``make(i)`` requests until ``total``
    were sent or ``duration`` passed."""
    phase = Phase(name)
    counter = iter(range(10**9))
    t_end = time.perf_counter() + duration if duration else None

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                i = next(counter)
                if total is not None and i >= total:
                    return
                if t_end is not None and time.perf_counter() > t_end:
                    return
                if until is not None and until.is_set():
                    return
                raw, rid = make(i)
                t0 = time.perf_counter()
                try:
                    writer.write(raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    if length:
                        await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 0
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t1 = time.perf_counter()
                phase.ends.append(t1)
                phase.latencies.append(t1 - t0)
                phase.statuses.append(status)
                phase.ids.append(rid)
                if status == 503:
                    await asyncio.sleep(0.01)  # a client honouring Retry-After, roughly
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    phase.elapsed = time.perf_counter() - t0
    return phase


def pixel_request(run: str) -> Callable[[int], tuple[bytes, str]]:
    def make(i: int) -> tuple[bytes, str]:
        rid = f"{run}-{i}"
        q = (
            f"id={PIXEL}&ev=PageView&eid={rid}&dl=https%3A%2F%2Fshop.example%2Fp%2F{i % 100}"
            f"&ts={int(time.time() * 1000)}&fbp=fb.1.1795300000000.{i}"
        )
        return (
            f"GET /tr?{q} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench/1\r\n\r\n".encode(),
            rid,
        )

    return make


def capi_request(run: str, per: int) -> Callable[[int], tuple[bytes, str]]:
    def make(i: int) -> tuple[bytes, str]:
        rid = f"{run}-{i}"
        body = orjson.dumps(
            {
                "data": [
                    {
                        "event_name": "Purchase",
                        "event_time": int(time.time()),
                        "event_id": f"{rid}-{j}",
                        "action_source": "website",
                        "event_source_url": "https://shop.example/thanks",
                        "user_data": {"em": f"b{i}.{j}@example.org", "client_user_agent": "b/1"},
                        "custom_data": {"value": 10.5, "currency": "EUR"},
                    }
                    for j in range(per)
                ],
                "access_token": TOKEN,
            }
        )
        head = (
            f"POST /v24.0/{PIXEL}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body, rid

    return make


def healthz(i: int) -> tuple[bytes, str]:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", str(i)


def start_collector(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSTREAM_")}
    env.update(to_env(s))
    env["PYTHONPATH"] = str(REPO)

    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})

    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "collect"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,
        )
    url = f"http://127.0.0.1:{s.collect_port}/readyz"
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"collector did not become ready; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def written_ids(s: Settings, topic: str, capi: bool) -> set[str]:
    got = await kafka_io.read(s, topic, idle_timeout=3, max_wait=300)
    ids: set[str] = set()
    for _, v, _, _ in got:
        msg = orjson.loads(v or b"{}")
        if capi:
            ids.add(msg["data"][0]["event_id"].rsplit("-", 1)[0])
        else:
            ids.add(msg["query"].split("eid=", 1)[1].split("&", 1)[0])
    return ids


def kafka_sh(cmd: str, env: dict[str, str]) -> None:
    p = subprocess.run([str(KAFKA_SH), cmd], env=env, capture_output=True, timeout=180)
    if p.returncode:
        raise SystemExit(f"kafka.sh {cmd} failed: {p.stderr.decode()[-1500:]}")


def settings_for(bootstrap: str, run: str, tmp: Path) -> Settings:
    return from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}).with_overrides(
        topics=Topics(pixel_raw=f"bench{run}.pixel.raw", server_raw=f"bench{run}.server.raw"),
        partitions=4,
        collect_port=free_port(),
        collect_tokens=frozenset({(PIXEL, TOKEN)}),
        data_dir=str(tmp),
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hits", type=int, default=30_000)
    ap.add_argument("--capi", type=int, default=3_000, help="CAPI requests")
    ap.add_argument("--events-per-request", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--outage-seconds", type=float, default=5.0)
    ap.add_argument("--skip-outage", action="store_true")
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS (make bench-collect starts a broker)")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    run = uuid.uuid4().hex[:8]
    s = settings_for(bootstrap, run, tmp)
    await kafka_io.create_topics(s, [s.topics.pixel_raw, s.topics.server_raw])
    print(f"collector on CPU 0, load on CPU 1; {args.concurrency} connections; broker {bootstrap}")
    proc = start_collector(s, tmp / "collector.log")
    c = args.concurrency
    try:
        await load(s.collect_port, healthz, total=2000, duration=None, concurrency=c, name="w")
        base = await load(
            s.collect_port, healthz, total=args.hits, duration=None, concurrency=c,
            name="baseline GET /healthz",
        )  # fmt: skip
        hits = await load(
            s.collect_port, pixel_request(f"h{run}"), total=args.hits, duration=None,
            concurrency=c, name="pixel GET /tr",
        )  # fmt: skip
        per = args.events_per_request
        capi = await load(
            s.collect_port, capi_request(f"c{run}", per), total=args.capi, duration=None,
            concurrency=c, name=f"CAPI POST ({per} ev/req)",
        )  # fmt: skip
    finally:
        stop(proc)
    print(base.line())
    print(hits.line("hits"))
    print(capi.line("events", per))
    print(capi.line("req"))
    b = sum(1 for x in base.statuses if x == 200) / base.elapsed
    h = sum(1 for x in hits.statuses if 200 <= x < 300) / hits.elapsed
    print(f"ratio pixel hits/s : baseline req/s = {h / b:.2f}")
    got_hits = await written_ids(s, s.topics.pixel_raw, capi=False)
    got_capi = await written_ids(s, s.topics.server_raw, capi=True)
    print(
        f"accounted: {len(hits.ok_ids() - got_hits)} of {len(hits.ok_ids())} acked hits and "
        f"{len(capi.ok_ids() - got_capi)} of {len(capi.ok_ids())} acked CAPI requests "
        "missing from the topics"
    )
    if args.skip_outage:
        return

    # --- outage: a broker of our own, stopped for --outage-seconds mid-run ----------
    port = free_port()
    state = tmp / "kafka"
    state.mkdir()
    for libs in (REPO / ".cache" / "kafka").glob("libs-*"):
        (state / libs.name).symlink_to(libs)
    kenv = dict(os.environ, KAFKA_LOCAL_PORT=str(port), KAFKA_LOCAL_DIR=str(state))
    kafka_sh("start", kenv)
    s2 = settings_for(f"127.0.0.1:{port}", f"o{run}", tmp)
    await kafka_io.create_topics(s2, [s2.topics.pixel_raw])
    proc = start_collector(s2, tmp / "collector-outage.log")
    done = asyncio.Event()
    try:
        task = asyncio.create_task(
            load(
                s2.collect_port,
                pixel_request(f"o{run}"),
                total=None,
                duration=None,
                concurrency=c,
                name="pixel, broker outage",
                until=done,
            )
        )
        await asyncio.sleep(4.0)
        t0 = time.perf_counter()
        await asyncio.to_thread(kafka_sh, "stop", kenv)
        t_stopped = time.perf_counter()
        await asyncio.sleep(args.outage_seconds)
        await asyncio.to_thread(kafka_sh, "start", kenv)
        t_back = time.perf_counter()
        await asyncio.sleep(6.0)  # the collector's next probe, then normal traffic again
        done.set()
        outage = await task
        got = await written_ids(s2, s2.topics.pixel_raw, capi=False)
    finally:
        stop(proc)
        kafka_sh("stop", kenv)
    print(
        f"outage: stop took {t_stopped - t0:.1f}s, down {args.outage_seconds:.0f}s, "
        f"start took {t_back - t_stopped - args.outage_seconds:.1f}s"
    )
    print(outage.line("hits"))
    print(f"  before the stop:        {outage.window(0, t0)}")
    print(f"  stopping, down, starting: {outage.window(t0, t_back)}")
    print(f"  broker back (6 s):      {outage.window(t_back, float('inf'))}")
    ok = outage.ok_ids()
    print(
        f"accounted: {len(ok)} acked hits, {len(ok - got)} missing from the topic; "
        f"{len(got - ok)} written without a 2xx (the client was told to retry)"
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
