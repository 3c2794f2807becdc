"""``convstream forward`` on the stream (SPEC §11): consumer group ``<app_id>-forward``
on the conversions topic, batches to the Graph API (agents/graph_client.py), dead letters
to the forward dead-letter topic, offsets committed behind settled records, and the
process's /metrics, /healthz, /readyz. Decisions are in streams/forward.py.

Delivery: a record's offset is committed only when it and every record before it in its
partition was accepted by Meta or dead-lettered (and the dead letter acknowledged by
the broker). A crash repeats requests (same ``event_id``: Meta deduplicates), never
skips events.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.graph_client import Closing, Rejected, Sender, count_rejected, new_session
from agents.kafka_io import client_kwargs, create_topics
from streams import forward as fwd
from streams import metrics
from streams.settings import Settings

log = logging.getLogger("convstream.forward")


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
        # (partition, offset): a batch mixes partitions, whose offsets repeat
        gone = {(r.thing.partition, r.thing.offset) for r in rejected}
        for item in batch.items:
            if item.partition is not None and (item.partition, item.offset) not in gone:
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
                if pos is None:  # nothing committed yet: behind from the oldest record read
                    pos = self.tracker.oldest(tp.partition)
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
