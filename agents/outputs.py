"""Writing pipeline results to Kafka, a batch at a time.

Records are grouped by partition into aiokafka batches (``create_batch`` /
``send_batch``): per-message ``send()`` with aiokafka's pure-Python murmur2 partitioner
cost a fifth of the worker's CPU in bench/e2e.py. Partitioning is by key, and stable:
a 64-hex key (conversion_id, a SHA-256) goes to ``int(key[:8], 16) % partitions``, any
other key (dead letters) to ``crc32(key) % partitions``. Same key, same partition, as
compaction and ordering need; it is not the Java client's murmur2 (README).

All sends are awaited together before the caller commits offsets, so a crash can
repeat an output (same key and value), never lose one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from streams import groups, records
from streams.groups import partition_for
from streams.model import Origin
from streams.pipeline import Result

__all__ = ["Outputs", "partition_for", "shared_outputs"]


def shared_outputs(
    producer_holder: Any, conversions: str, dead_letter: str
) -> Callable[[], Awaitable[Outputs]]:
    """An async getter of one ``Outputs`` on the worker's shared producer (the ingest
    service's), made once that producer has started."""
    made: list[Outputs] = []

    async def get() -> Outputs:
        if not made:
            await producer_holder.producer_ready.wait()
            made.append(Outputs(producer_holder.producer, conversions, dead_letter))
        return made[0]

    return get


class Outputs:
    def __init__(
        self,
        producer: Any,
        conversions: str,
        dead_letter: str,
        key: Callable[[dict[str, Any]], bytes] | None = None,
        *,
        grouped: bool = False,
    ) -> None:
        self.producer = producer  # a started AIOKafkaProducer
        self.conversions = conversions
        self.dead_letter = dead_letter
        self.key = key or (lambda rec: rec["conversion_id"].encode())
        self.grouped = grouped  # conversions as groups per partition (streams/groups.py)
        self._partitions: dict[str, int] = {}

    async def _count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            parts = await self.producer.partitions_for(topic)
            n = self._partitions[topic] = len(parts)
        return n

    async def write(self, result: Result) -> None:
        await (await self.start_write(result))

    async def start_write(self, result: Result) -> Awaitable[Any]:
        """``write``'s sends, started: returns what to await for their acks."""
        items: list[tuple[str, bytes, bytes | None]]
        parts: list[int | None] | None = None
        if self.grouped:
            n = await self._count(self.conversions)
            items, explicit = groups.grouped(result.conversions, self.key, n, self.conversions)
            parts = list(explicit)
        else:
            items = [
                (self.conversions, self.key(rec), orjson.dumps(rec)) for rec in result.conversions
            ]
        for dl in result.dead_letters:
            origin = Origin(dl["source_topic"], dl["partition"], dl["offset"])
            key = records.dead_letter_key(origin, dl["event_index"])
            items.append((self.dead_letter, key, orjson.dumps(dl)))
            if parts is not None:
                parts.append(None)
        return await self.start_all(items, parts)

    async def send_all(
        self,
        items: list[tuple[str, bytes, bytes | None]],
        partitions: Sequence[int | None] | None = None,
    ) -> None:
        """Send (topic, key, value) items, to ``partitions[i]`` when given and not None
        (else by key); return once the broker acknowledged all. A None value is a
        tombstone."""
        await (await self.start_all(items, partitions))

    async def start_all(
        self,
        items: list[tuple[str, bytes, bytes | None]],
        partitions: Sequence[int | None] | None = None,
    ) -> Awaitable[Any]:
        """``send_all``'s sends, handed to the producer in order (so per partition they
        are written in this order, before any later call's); returns what to await for
        the broker's acks."""
        return asyncio.gather(*(fut for fut, _ in await self._start(items, partitions)))

    async def send_few(
        self, items: list[tuple[str, bytes, bytes | None]], partitions: Sequence[int]
    ) -> None:
        """Send a few records (the stages' ticks) one by one with ``send``, and await
        the acks. ``send_batch`` waits until a partition has no batch queued, re-checking
        (and, in aiokafka 0.14, charging its timeout the whole wait again each time), so
        while another writer kept the partition busy a tick waited its full timeout and
        failed (KafkaTimeoutError, worker exit: seen once in bench/e2e.py with ingest in
        the worker's process); ``send`` joins the open batch or waits for one to drain."""
        producer = self.producer
        futs = [
            await producer.send(topic, value, key=key, partition=part)
            for (topic, key, value), part in zip(items, partitions, strict=True)
        ]
        await asyncio.gather(*futs)

    async def send_last_offsets(
        self, items: list[tuple[str, bytes, bytes | None]], partitions: Sequence[int]
    ) -> dict[int, int]:
        """Send items to the given partitions (of one topic), await the acks, and return
        the offset of the last record written to each partition."""
        last: dict[int, int] = {}
        for fut, count in await self._start(items, partitions):
            md = await fut
            last[md.partition] = max(last.get(md.partition, -1), md.offset + count - 1)
        return last

    async def _start(
        self,
        items: list[tuple[str, bytes, bytes | None]],
        partitions: Sequence[int | None] | None,
    ) -> list[tuple[asyncio.Future[Any], int]]:
        """The producer batches of ``items``, sent: (future of the batch's metadata,
        record count) each."""
        producer = self.producer
        batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        pending: list[tuple[asyncio.Future[Any], int]] = []
        for i, (topic, key, value) in enumerate(items):
            part = None if partitions is None else partitions[i]
            if part is None:
                part = partition_for(key, await self._count(topic))
            entry = batches.get((topic, part))
            if entry is None:
                entry = batches[(topic, part)] = (producer.create_batch(), [0])
            batch, n = entry
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                pending.append((await producer.send_batch(batch, topic, partition=part), n[0]))
                entry = batches[(topic, part)] = (producer.create_batch(), [0])
                batch, n = entry
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError("record larger than the producer's max_batch_size")
            n[0] += 1
        for (topic, part), (batch, n) in batches.items():
            batch.close()
            pending.append((await producer.send_batch(batch, topic, partition=part), n[0]))
        return pending
