"""Ingest: raw bytes from the input topics → pipeline → output topics, in batches.

The ingest stage is stateless, so it runs as a batch aiokafka consume→process→produce
loop hosted in the Faust worker (a mode Service started with the app) instead of a
Faust stream: measured with bench/e2e.py, Faust's per-message stream machinery
capped the stage at ~4k events/s where this loop runs near the bare-client ceiling
(README "Throughput"). Stateful stages (dedup, attribution) use Faust streams and tables.

Delivery: all outputs of a batch are acknowledged by the broker before the batch's
offsets are committed, so a crash can repeat outputs (same keys and values), never
lose them. The loop cannot raise on data: ``Pipeline.process`` turns every message
into conversions, dead letters or a counted skip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from agents.failfast import die
from agents.kafka_io import client_kwargs
from agents.outputs import Outputs
from streams import metrics
from streams.dedupe import partition_key
from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings

log = logging.getLogger("convstream.ingest")


class IngestState:
    """What other parts of the worker need from the ingest service: whether its consumer
    joined (readiness) and its producer (shared with the dedup agent)."""

    def __init__(self) -> None:
        self.joined = False
        self.batches = 0
        self.producer: AIOKafkaProducer | None = None
        self.producer_ready = asyncio.Event()


def internal_topic(settings: Settings) -> str:
    """Valid, PII-hashed candidate conversions on their way to the dedup agent."""
    return f"{settings.app_id}-dedup-in"


def register(app: Any, settings: Settings) -> IngestState:
    state = IngestState()
    sources: dict[str, Source] = {
        settings.topics.server_raw: "server",
        settings.topics.pixel_raw: "browser",
    }

    @app.service
    class Ingest(Service):  # type: ignore[misc]
        """Consumer group ``<app_id>-ingest`` over both raw topics."""

        consumer: AIOKafkaConsumer
        producer: AIOKafkaProducer

        async def on_start(self) -> None:
            kw = client_kwargs(settings)
            self.consumer = AIOKafkaConsumer(
                *sources,
                group_id=f"{settings.app_id}-ingest",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.batch_size,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                **kw,
            )
            self.producer = AIOKafkaProducer(
                acks="all",
                enable_idempotence=True,
                max_batch_size=1024 * 1024,
                max_request_size=8 * 1024 * 1024,
                **kw,
            )
            await self.producer.start()
            state.producer = self.producer
            state.producer_ready.set()
            await self.consumer.start()
            self.pipeline = Pipeline(settings)
            # valid events go to the dedup stage, repartitioned by pixel_id|event_name
            self.outputs = Outputs(
                self.producer,
                internal_topic(settings),
                settings.topics.dead_letter,
                key=partition_key,
            )

        async def on_stop(self) -> None:
            await self.consumer.stop()
            await self.producer.stop()

        @Service.task
        async def _consume(self) -> None:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug or an unreachable broker: never ack
                die("ingest", exc)

        async def _run(self) -> None:
            within_ms = int(settings.batch_within * 1000)
            while not self.should_stop:
                batch = await self.consumer.getmany(
                    timeout_ms=max(within_ms, 100), max_records=settings.batch_size
                )
                state.joined = True
                if not batch:
                    continue
                t0 = time.perf_counter()
                now = time.time()
                result = Result()
                n = 0
                process = self.pipeline.process
                for tp, records in batch.items():
                    source = sources[tp.topic]
                    for r in records:
                        process(
                            source, r.value, Origin(tp.topic, tp.partition, r.offset), now, result
                        )
                    n += len(records)
                await self.outputs.write(result)
                await self._commit()
                result.tally.flush()
                state.batches += 1
                metrics.BATCH_SECONDS.labels("ingest").observe(time.perf_counter() - t0)
                metrics.BATCH_SIZE.labels("ingest").observe(n)

        async def _commit(self) -> None:
            try:
                await self.consumer.commit()
            except (CommitFailedError, KafkaError) as e:
                # a rebalance took the partitions: the next owner repeats this batch's
                # outputs (same keys and values); nothing is lost
                log.warning(
                    "offset commit failed; batch will be redelivered",
                    extra={"error": type(e).__name__},
                )
            except asyncio.CancelledError:
                raise

    return state
