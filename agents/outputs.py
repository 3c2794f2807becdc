"""Writing pipeline results to Kafka: every send is started, then all are awaited
together, before the batch returns (and Faust acks its offsets). So a crash can
repeat an output (same key and value), never lose one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson

from streams import records
from streams.model import Origin
from streams.pipeline import Result


class Outputs:
    def __init__(self, app: Any, conversions: str, dead_letter: str) -> None:
        self.app = app
        self.conversions = conversions
        self.dead_letter = dead_letter

    async def write(self, result: Result) -> None:
        producer = self.app.producer
        pending: list[Awaitable[Any]] = []
        for rec in result.conversions:
            key = rec["conversion_id"].encode()
            pending.append(
                await producer.send(self.conversions, key, orjson.dumps(rec), None, None, None)
            )
        for dl in result.dead_letters:
            key = records.dead_letter_key(
                Origin(dl["source_topic"], dl["partition"], dl["offset"]), dl["event_index"]
            )
            pending.append(
                await producer.send(self.dead_letter, key, orjson.dumps(dl), None, None, None)
            )
        if pending:
            await asyncio.gather(*pending)
