"""Ingest agents: raw bytes from the input topics → pipeline → output topics.

The agent body cannot raise on data: ``Pipeline.process`` turns every message into
conversions, dead letters or a counted skip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from agents.outputs import Outputs
from streams import metrics
from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings


def ingest_body(
    source: Source, pipeline: Pipeline, outputs: Outputs, batch_size: int, within: float
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within):
            t0 = time.perf_counter()
            now = time.time()
            result = Result()
            for event in events:
                msg = event.message
                origin = Origin(msg.topic, msg.partition, msg.offset)
                result.extend(pipeline.process(source, msg.value, origin, now))
            await outputs.write(result)
            metrics.BATCH_SECONDS.labels("ingest").observe(time.perf_counter() - t0)
            metrics.BATCH_SIZE.labels("ingest").observe(len(events))

    return ingest


def register(app: Any, topics: Any, settings: Settings) -> None:
    pipeline = Pipeline(settings)
    outputs = Outputs(app, settings.topics.conversions, settings.topics.dead_letter)
    inputs: tuple[tuple[Source, Any], ...] = (
        ("server", topics.server_raw),
        ("browser", topics.pixel_raw),
    )
    for source, topic in inputs:
        body = ingest_body(source, pipeline, outputs, settings.batch_size, settings.batch_within)
        app.agent(topic, name=f"convstream.ingest.{source}")(body)
