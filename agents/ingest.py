"""Ingest: raw bytes from the input topics → pipeline → output topics, in batches.

A plain aiokafka consume→process→produce loop hosted in the Faust worker
(agents/batchloop.py: faster than a Faust stream, and it cannot drop records), whose
producer is shared with the other stages. Stateful stages (dedup, attribution) use
Faust streams and tables.

Order: the two raw topics are merged in ``received_at`` order as they are read
(streams/align.py): ingest processes the earliest buffered record first, pauses the
partitions that are ahead, and waits (at most ``ALIGN_MAX_WAIT``) for a partition that
still has unread records, so the dedup stage gets each conversion's copies in the order
they were received even when one topic has a backlog.

Delivery: all outputs of a batch are acknowledged by the broker before the offsets of
its records are committed (of processed records only), so a crash can repeat outputs
(same keys and values), never lose them. The loop cannot raise on data:
``Pipeline.process`` turns every message into conversions, dead letters or a counted
skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.batchloop import BatchLoop
from agents.kafka_io import client_kwargs
from agents.outputs import Outputs
from streams.align import Aligner
from streams.dedupe import partition_key
from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings
from streams.tally import Tally


class IngestState:
    """What other parts of the worker need from the ingest service: whether its consumer
    joined (readiness) and the worker's producer (shared with the other stages)."""

    def __init__(self) -> None:
        self.service: Any = None  # IngestLoop here, or IngestProcess (agents/ingest_process.py)
        self.producer: AIOKafkaProducer | None = None
        self.producer_ready = asyncio.Event()

    @property
    def joined(self) -> bool:
        return bool(self.service is not None and self.service.joined)


ALIGN_MAX_WAIT = 2.0  # seconds a lagging partition that yields nothing may hold ingest back


def internal_topic(settings: Settings) -> str:
    """Valid, PII-hashed candidate conversions on their way to the dedup agent."""
    return f"{settings.app_id}-dedup-in"


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The worker's producer: idempotent, acks from all in-sync replicas, big batches,
    compressed record batches (``CONVSTREAM_COMPRESSION``, default zstd: the group
    records of the internal topics are JSON lines, about 8x smaller; README Throughput)."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        compression_type=None if settings.compression == "none" else settings.compression,
        **client_kwargs(settings),
    )


class IngestLoop(BatchLoop):
    """Consumer group ``<app_id>-ingest`` over both raw topics, in the worker's process or
    in its own (agents/ingest_process.py). ``count`` and ``observe`` are where its
    metrics go: this process's registry, or the worker's through a pipe."""

    stage = "ingest"

    always_handle = True  # records wait in the aligner between polls

    def __init__(self, settings: Settings, state: IngestState | None = None, **kw: Any) -> None:
        self.sources: dict[str, Source] = {
            settings.topics.server_raw: "server",
            settings.topics.pixel_raw: "browser",
        }
        super().__init__(settings, list(self.sources), f"{settings.app_id}-ingest", **kw)
        self.ingest_state = state
        self.aligner = Aligner()
        self.waiting_since: float | None = None  # a lagging partition holds us back

    def revoked(self, partitions: set[Any]) -> None:
        for tp in partitions:
            self.aligner.drop(tp)

    def count(self, tally: Tally) -> None:
        """A batch's counts (messages, events, dead letters, PII values...)."""
        tally.flush()

    async def lagging(self) -> set[Any]:
        """Assigned partitions with records on the broker not fetched yet (or no
        fetch answered yet): the merge must not run past their buffered records."""
        out = set()
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None or await self.consumer.position(tp) < high:
                out.add(tp)
        return out

    async def start_outputs(self) -> None:
        self.producer = make_producer(self.settings)
        await self.producer.start()
        if self.ingest_state is not None:  # the worker's other stages write with it too
            self.ingest_state.producer = self.producer
            self.ingest_state.producer_ready.set()
        self.pipeline = Pipeline(self.settings)
        # valid events go to the dedup stage, repartitioned by pixel_id|event_name
        self.outputs = Outputs(
            self.producer,
            internal_topic(self.settings),
            self.settings.topics.dead_letter,
            key=partition_key,
            grouped=True,
        )

    async def stop_outputs(self) -> None:
        await self.producer.stop()

    async def handle(
        self, batch: dict[Any, list[Any]]
    ) -> tuple[int, Awaitable[Any], dict[Any, int]]:
        aligner = self.aligner
        sources = self.sources
        size = self.settings.batch_size
        for tp, records in batch.items():
            rank = 0 if sources[tp.topic] == "browser" else 1  # ties: pixel first
            aligner.add(tp, rank, tp.partition, ((r.offset, r) for r in records))
        lagging = await self.lagging()
        wall = time.monotonic()
        if lagging and self.waiting_since is None:
            self.waiting_since = wall
        force = self.waiting_since is not None and wall - self.waiting_since > ALIGN_MAX_WAIT
        taken = aligner.take(lagging, size, force=force)
        if taken:
            self.waiting_since = None
        # fetch what holds the merge back; pause partitions with a full buffer
        full = {tp for tp in self.consumer.assignment() if aligner.buffered(tp) >= size}
        paused = self.consumer.paused()
        if full - paused:
            self.consumer.pause(*(full - paused))
        if paused - full:
            self.consumer.resume(*(paused - full))
        now = time.time()
        result = Result()
        process = self.pipeline.process
        offsets: dict[Any, int] = {}
        for tp, offset, r, decoded in taken:
            origin = Origin(tp.topic, tp.partition, offset)
            process(sources[tp.topic], r.value, origin, now, result, decoded)
            offsets[tp] = offset + 1
        acks = await self.outputs.start_write(result)
        self.count(result.tally)
        return len(taken), acks, offsets


def register(app: Any, settings: Settings) -> IngestState:
    state = IngestState()
    if settings.ingest_own_process:
        from agents.ingest_process import IngestProcess

        @app.service
        class IngestChild(IngestProcess):
            """Ingest in a child process; the worker's producer lives here."""

            def __init__(self, **kw: Any) -> None:
                super().__init__(settings, state, **kw)
                state.service = self

    else:

        @app.service
        class Ingest(IngestLoop):
            """Ingest in the worker's process, on the worker's producer."""

            def __init__(self, **kw: Any) -> None:
                super().__init__(settings, state, **kw)
                state.service = self

    return state
