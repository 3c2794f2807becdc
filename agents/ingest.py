"""Ingest: raw bytes from the input topics → pipeline → output topics, in batches.

A plain aiokafka consume→process→produce loop hosted in the Faust worker
(agents/batchloop.py: faster than a Faust stream, and it cannot drop records), whose
producer is shared with the other stages. Stateful stages (dedup, attribution) use
Faust streams and tables.

Delivery: all outputs of a batch are acknowledged by the broker before the batch's
offsets are committed, so a crash can repeat outputs (same keys and values), never
lose them. The loop cannot raise on data: ``Pipeline.process`` turns every message
into conversions, dead letters or a counted skip.
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
from streams.dedupe import partition_key
from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings


class IngestState:
    """What other parts of the worker need from the ingest service: whether its consumer
    joined (readiness) and its producer (shared with the other stages)."""

    def __init__(self) -> None:
        self.service: Any = None
        self.producer: AIOKafkaProducer | None = None
        self.producer_ready = asyncio.Event()

    @property
    def joined(self) -> bool:
        return bool(self.service is not None and self.service.joined)


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
    class Ingest(BatchLoop):
        """Consumer group ``<app_id>-ingest`` over both raw topics."""

        stage = "ingest"

        def __init__(self, **kw: Any) -> None:
            super().__init__(settings, list(sources), f"{settings.app_id}-ingest", **kw)
            state.service = self

        async def start_outputs(self) -> None:
            self.producer = AIOKafkaProducer(
                acks="all",
                enable_idempotence=True,
                max_batch_size=1024 * 1024,
                max_request_size=8 * 1024 * 1024,
                **client_kwargs(settings),
            )
            await self.producer.start()
            state.producer = self.producer
            state.producer_ready.set()
            self.pipeline = Pipeline(settings)
            # valid events go to the dedup stage, repartitioned by pixel_id|event_name
            self.outputs = Outputs(
                self.producer,
                internal_topic(settings),
                settings.topics.dead_letter,
                key=partition_key,
                grouped=True,
            )

        async def stop_outputs(self) -> None:
            await self.producer.stop()

        async def handle(self, batch: dict[Any, list[Any]]) -> tuple[int, Awaitable[Any]]:
            now = time.time()
            result = Result()
            n = 0
            process = self.pipeline.process
            for tp, records in batch.items():
                source = sources[tp.topic]
                for r in records:
                    process(source, r.value, Origin(tp.topic, tp.partition, r.offset), now, result)
                n += len(records)
            acks = await self.outputs.start_write(result)
            result.tally.flush()
            return n, acks

    return state
