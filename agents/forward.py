"""``convstream forward`` wiring (SPEC §11): aiokafka in, aiohttp to the Graph API, the
forward dead-letter topic out. Decisions (bodies, batches, classes, splits, backoff,
offsets) are in streams/forward.py; this module only moves bytes and waits.

Delivery: a record's offset is committed only when it and every record before it in its
partition was accepted by Meta or dead-lettered (and the dead letter acknowledged by
the broker). A crash repeats requests (same ``event_id``: Meta deduplicates), never
skips events.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.kafka_io import client_kwargs, create_topics
from streams import forward as fwd
from streams import metrics
from streams.settings import Forward, Settings

log = logging.getLogger("convstream.forward")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that ends as a dead letter, with why."""

    thing: fwd.Item | fwd.Bad
    reason: str
    outcome: fwd.Outcome | None
    attempts: int


async def pause(closing: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds; raise Closing at once when the forwarder stops."""
    if closing.is_set():
        raise Closing
    try:
        await asyncio.wait_for(closing.wait(), delay)
    except TimeoutError:
        return
    raise Closing


class Closing(Exception):
    """The forwarder stops: a delivery that would have to wait gives up (unsettled, so
    its events are read again after the restart)."""


class Slots:
    """``n`` request slots, handed out oldest batch first (not first come): the batch
    holding the oldest unsent events goes next, so offsets can be committed sooner."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self.free > 0 and not self._heap:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            raise

    def release(self) -> None:
        while self._heap:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class PixelGate:
    """One pixel's sending state: active, throttled (until a time) or paused (bad token;
    probed again after ``pause_probe``). Every request of the pixel waits at the gate."""

    def __init__(self, pixel_id: str, configured: bool, closing: asyncio.Event) -> None:
        self.closing = closing
        self.pixel_id = pixel_id
        self.configured = configured
        self.state = "active"
        self.not_before = 0.0
        self._show()

    async def wait(self) -> None:
        while (delay := self.not_before - time.monotonic()) > 0:
            await pause(self.closing, delay)

    def hold(self, delay: float, state: str) -> None:
        self.not_before = max(self.not_before, time.monotonic() + delay)
        if state != self.state:
            level = logging.ERROR if state == "paused" else logging.WARNING
            msg = (
                "pixel paused: Meta rejected its access token (code 190); its events are "
                "kept and the token is probed again"
                if state == "paused"
                else "pixel throttled by Meta; waiting before sending again"
            )
            log.log(level, msg, extra={"pixel_id": self.pixel_id, "wait_s": round(delay, 3)})
            self.state = state
            self._show()

    def answered(self) -> None:
        if self.state != "active":
            log.info("pixel sending again", extra={"pixel_id": self.pixel_id, "was": self.state})
            self.state = "active"
            self._show()

    def _show(self) -> None:
        if self.configured:  # the label set stays bounded by the configured pixels
            for st in metrics.PIXEL_STATES:
                metrics.FORWARD_PIXEL_STATE.labels(self.pixel_id, st).set(st == self.state)


class TokenRejected(Exception):
    """Offline only: Meta rejected a pixel's access token (code 190). Names the pixel."""


class Sender:
    """Sends batches to ``{graph_url}/{api_version}/{pixel_id}/events`` until every event
    is accepted or isolated as rejected. At most ``concurrency`` requests at once. On a
    rejected token the pixel waits and is probed again, or (``fail_on_auth``, offline)
    TokenRejected is raised."""

    def __init__(
        self,
        fw: Forward,
        session: aiohttp.ClientSession,
        rnd: Callable[[], float] = random.random,
        *,
        fail_on_auth: bool = False,
    ) -> None:
        self.fail_on_auth = fail_on_auth
        self.fw = fw
        self.session = session
        self.rnd = rnd
        self.tokens = dict(fw.access_tokens)
        self.secrets = tuple(self.tokens.values())
        self.slots = Slots(fw.concurrency)
        self.closing = asyncio.Event()
        self.gates = {p: PixelGate(p, True, self.closing) for p in self.tokens}
        self.timeout = aiohttp.ClientTimeout(total=fw.timeout)
        self.requests = 0

    def paused(self) -> list[str]:
        return sorted(p for p, g in self.gates.items() if g.state == "paused")

    async def deliver(self, batch: fwd.Batch) -> list[Rejected]:
        """Every event of ``batch`` sent or rejected; the rejected ones are returned."""
        token = self.tokens.get(batch.pixel_id)
        if token is None:
            return [Rejected(i, "no_access_token", None, 0) for i in batch.items]
        gate = self.gates[batch.pixel_id]
        rejected: list[Rejected] = []
        # (items, failed tries of this batch, requests that carried these items so far)
        work: list[tuple[list[fwd.Item], int, int]] = [(batch.items, 0, 0)]
        while work:
            items, attempt, carried = work.pop()
            carried += 1
            outcome = await self._send_through(gate, batch, items, token)
            step = fwd.plan(outcome, len(items), attempt, self.fw, self.rnd)
            if outcome.kind not in ("throttle", "auth"):
                gate.answered()
            elif outcome.kind == "auth" and self.fail_on_auth:
                raise TokenRejected(
                    f"pixel {batch.pixel_id}: Meta rejected its access token (code 190, "
                    f"subcode {outcome.subcode}); fix the token and run again (events sent "
                    "already are deduplicated by event_id)"
                )
            if step.action == "done":
                names = Counter(metrics.event_label(i.event.get("event_name")) for i in items)
                for name, n in names.items():
                    metrics.FORWARD_EVENTS_SENT.labels(name).inc(n)
            elif step.action == "split":
                metrics.FORWARD_SPLITS.inc()
                left, right = fwd.split(items)
                work.extend(((right, 0, carried), (left, 0, carried)))  # left half first
            elif step.action == "dead_letter":
                rejected.extend(Rejected(i, step.reason, outcome, carried) for i in items)
            else:
                metrics.FORWARD_EVENTS_RETRIED.labels(step.reason).inc(len(items))
                if step.pixel_wide:
                    gate.hold(step.delay, step.reason)
                    work.append((items, attempt, carried))
                else:
                    await pause(self.closing, step.delay)
                    work.append((items, attempt + 1, carried))
        return rejected

    async def _send_through(
        self, gate: PixelGate, batch: fwd.Batch, items: list[fwd.Item], token: str
    ) -> fwd.Outcome:
        """Wait for the pixel's gate and a request slot; the gate is checked again with
        the slot held, so a throttle seen meanwhile is honoured."""
        while True:
            await gate.wait()
            await self.slots.acquire(batch.first)
            try:
                if gate.not_before > time.monotonic():
                    continue
                return await self._post(batch, items, token)
            finally:
                self.slots.release()

    async def _post(self, batch: fwd.Batch, items: list[fwd.Item], token: str) -> fwd.Outcome:
        url = f"{self.fw.graph_url}/{self.fw.api_version}/{batch.pixel_id}/events"
        body = fwd.encode_body(
            fwd.request_body((i.event for i in items), batch.test_event_code), token
        )
        t0 = time.perf_counter()
        self.requests += 1
        try:
            async with self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            ) as r:
                raw = await r.read()
                outcome = fwd.classify(
                    r.status, r.headers.get("Retry-After"), raw, time.time(), self.secrets
                )
        except TimeoutError:
            outcome = fwd.transport_failure("timeout")
        except (aiohttp.ClientError, OSError):
            outcome = fwd.transport_failure("transport")
        metrics.FORWARD_REQUEST_SECONDS.observe(time.perf_counter() - t0)
        metrics.FORWARD_REQUESTS.labels(outcome.kind).inc()
        if outcome.kind != "ok":
            log.info(
                "request not accepted",
                extra={
                    "pixel_id": batch.pixel_id,
                    "events": len(items),
                    "outcome": outcome.kind,
                    "reason": outcome.reason,
                    "http_status": outcome.status,
                    "code": outcome.code,
                    "subcode": outcome.subcode,
                },
            )
        return outcome


def new_session(fw: Forward) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=fw.concurrency, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
    )


def count_rejected(rejected: list[Rejected]) -> None:
    for r in rejected:
        metrics.FORWARD_EVENTS_REJECTED.labels(r.reason).inc()
        if r.reason == "rejected":
            log.warning(
                "event rejected by Meta; dead-lettered",
                extra={
                    "offset": r.thing.offset,
                    "partition": r.thing.partition,
                    "code": r.outcome.code if r.outcome else None,
                    "subcode": r.outcome.subcode if r.outcome else None,
                },
            )


# --- the stream ---------------------------------------------------------------------------


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.forwarder.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.forwarder.joined = True  # the group was joined (possibly with no partitions)


class Forwarder:
    """Consumer group ``<app_id>-forward`` on the conversions topic → Graph API."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.fw = settings.forward
        self.topic = settings.topics.conversions
        self.dlq_topic = settings.topics.forward_dead_letter
        self.tracker = fwd.OffsetTracker()
        self.batcher = fwd.Batcher(self.fw.batch_size, self.fw.linger)
        self.tasks: set[asyncio.Task[None]] = set()
        self.joined = False
        self.stopping = asyncio.Event()
        self.committed: dict[int, int] = {}
        self.failed = False

    async def run(self) -> None:
        await create_topics(self.s, [self.dlq_topic])  # if missing, like the worker's topics
        kw = client_kwargs(self.s)
        self.consumer = AIOKafkaConsumer(
            group_id=f"{self.s.app_id}-forward",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.fw.batch_size,
            **kw,
        )
        self.producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **kw)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        async with new_session(self.fw) as session:
            self.sender = Sender(self.fw, session)
            try:
                await self._loop()
                await self._drain()
            finally:
                for t in self.tasks:
                    t.cancel()
                await self.consumer.stop()
                await self.producer.stop()

    async def _loop(self) -> None:
        paused = False
        while not self.stopping.is_set():
            metrics.FORWARD_EVENTS_WAITING.set(self.tracker.pending())
            # read-ahead is bounded by what a crash would repeat, not only by the unsent
            if self.tracker.uncommitted() >= self.fw.max_waiting:
                self.consumer.pause(*self.consumer.assignment())  # newly assigned ones too
                paused = True
            elif paused:
                self.consumer.resume(*self.consumer.assignment())
                paused = False
            due = self.batcher.next_due()
            wait_s = 0.2 if due is None else max(0.0, due + self.fw.linger - time.monotonic())
            batch = await self.consumer.getmany(
                timeout_ms=int(min(wait_s, 0.2) * 1000), max_records=self.fw.batch_size
            )
            now = time.monotonic()
            for tp, records in batch.items():
                for r in records:
                    await self._take(tp.partition, r.offset, r.value, now)
            for b in self.batcher.due(now):
                self._spawn(b)
            await self._commit()

    async def _take(self, partition: int, offset: int, value: bytes | None, now: float) -> None:
        self.tracker.add(partition, offset)
        thing = fwd.decode(value, partition, offset)
        if isinstance(thing, fwd.Bad):
            await self._dead_letter([Rejected(thing, "invalid_record", None, 0)])
            return
        if (full := self.batcher.add(thing, now)) is not None:
            self._spawn(full)

    def _spawn(self, batch: fwd.Batch) -> None:
        task = asyncio.create_task(self._deliver(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, batch: fwd.Batch) -> None:
        try:
            rejected = await self.sender.deliver(batch)
            await self._dead_letter(rejected)
        except Closing:
            return  # unsettled: read again after the restart
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or a broker gone: stop; its events stay uncommitted
            log.exception("forward delivery failed; stopping (its events are sent again)")
            self.failed = True
            self.stopping.set()
            return
        gone = {r.thing.offset for r in rejected}
        for item in batch.items:
            if item.partition is not None and item.offset not in gone:
                self.tracker.settle(item.partition, item.offset)

    async def _dead_letter(self, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        now = time.time()
        futs = [
            await self.producer.send(
                self.dlq_topic,
                orjson.dumps(
                    fwd.dead_letter(self.topic, r.thing, r.reason, r.outcome, r.attempts, now)
                ),
                key=fwd.dead_letter_key(r.thing),
            )
            for r in rejected
        ]
        await asyncio.gather(*futs)  # acknowledged (acks=all) before the offsets move
        count_rejected(rejected)
        for r in rejected:
            if r.thing.partition is not None:
                self.tracker.settle(r.thing.partition, r.thing.offset)

    async def _commit(self, only: set[int] | None = None) -> None:
        ready = self.tracker.committable()
        if only is not None:
            ready = {p: o for p, o in ready.items() if p in only}
        if ready:
            try:
                await self.consumer.commit(
                    {TopicPartition(self.topic, p): o for p, o in ready.items()}
                )
                self.committed.update(ready)
            except (CommitFailedError, KafkaError) as e:
                log.warning(
                    "offset commit failed; records will be sent again (same event_id)",
                    extra={"error": type(e).__name__},
                )
        lag = 0
        for tp in self.consumer.assignment():
            end = self.consumer.last_stable_offset(tp) or self.consumer.highwater(tp)
            if end is not None:
                pos = self.committed.get(tp.partition)
                lag += max(0, end - pos) if pos is not None else 0
        metrics.FORWARD_LAG.set(lag)

    async def revoked(self, partitions: set[int]) -> None:
        """Before a rebalance takes partitions: commit what is settled, forget the rest
        (the next owner reads it again from the committed offsets)."""
        await self._commit()
        self.batcher.drop_partitions(partitions)
        self.tracker.forget(partitions)
        for p in partitions:
            self.committed.pop(p, None)

    async def _drain(self, timeout: float = 30.0) -> None:
        """On shutdown: send the open batches, give up waits (throttled, paused, backoff),
        let requests in flight finish, commit what is settled."""
        self.sender.closing.set()
        for b in self.batcher.drain():
            self._spawn(b)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        await self._commit()


async def serve_web(settings: Settings, ready: Callable[[], dict[str, Any]]) -> web.AppRunner:
    """/metrics, /healthz and /readyz of the forwarder on the worker's web settings."""

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.REGISTRY),
            content_type=CONTENT_TYPE_LATEST.split(";")[0],
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        body = ready()
        return web.json_response(body, status=200 if body["ready"] else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    return runner


async def run_stream(settings: Settings) -> int:
    f = Forwarder(settings)

    def ready() -> dict[str, Any]:
        sender: Sender | None = getattr(f, "sender", None)
        paused = sender.paused() if sender is not None else []
        return {"ready": f.joined and not paused, "joined": f.joined, "paused_pixels": paused}

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, f.stopping.set)
    runner = await serve_web(settings, ready)
    log.info(
        "forward started",
        extra={
            "topic": f.topic,
            "group": f"{settings.app_id}-forward",
            "pixels": list(settings.forward.pixels),
            "graph_url": settings.forward.graph_url,
        },
    )
    try:
        await f.run()
    finally:
        await runner.cleanup()
    return 70 if f.failed else 0  # 70 (EX_SOFTWARE), as the worker's fail-fast exit


# --- offline ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileResult:
    events: int
    sent: int
    rejected: int
    requests: int
    bodies: int


def read_file(data: bytes) -> list[fwd.Item | fwd.Bad]:
    """Every non-blank line of a conversions JSONL file (offset = 0-based line number)."""
    return [fwd.decode(raw, None, n) for n, raw in enumerate(data.split(b"\n")) if raw.strip()]


def dry_run(things: list[fwd.Item | fwd.Bad], fw: Forward, out: Path) -> FileResult:
    """The request bodies that would be sent (no token), one JSON file each."""
    out.mkdir(parents=True, exist_ok=True)
    items = [t for t in things if isinstance(t, fwd.Item)]
    batches = fwd.chunks(items, fw.batch_size)
    for n, b in enumerate(batches):
        tec = f"-{b.test_event_code}" if b.test_event_code else ""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tec)
        path = out / f"{n:05d}-{b.pixel_id}{safe}.json"
        body = {
            "pixel_id": b.pixel_id,
            **fwd.request_body((i.event for i in b.items), b.test_event_code),
        }
        path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return FileResult(len(things), 0, len(things) - len(items), 0, len(batches))


async def send_file(
    things: list[fwd.Item | fwd.Bad], settings: Settings, dead_letters: Path, source: str
) -> FileResult:
    """Send a file's conversions as the stream does; rejected ones to ``dead_letters``."""
    fw = settings.forward
    rejected = [Rejected(t, "invalid_record", None, 0) for t in things if isinstance(t, fwd.Bad)]
    items = [t for t in things if isinstance(t, fwd.Item)]
    async with new_session(fw) as session:
        sender = Sender(fw, session, fail_on_auth=True)
        results = await asyncio.gather(
            *(sender.deliver(b) for b in fwd.chunks(items, fw.batch_size))
        )
    for r in results:
        rejected.extend(r)
    count_rejected(rejected)
    now = time.time()
    rejected.sort(key=lambda r: r.thing.offset)
    dead_letters.parent.mkdir(parents=True, exist_ok=True)
    dead_letters.write_bytes(
        b"".join(
            orjson.dumps(fwd.dead_letter(source, r.thing, r.reason, r.outcome, r.attempts, now))
            + b"\n"
            for r in rejected
        )
    )
    n_rej = len(rejected)
    return FileResult(len(things), len(things) - n_rej, n_rej, sender.requests, 0)
