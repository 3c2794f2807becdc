"""A consume → process → produce loop over plain aiokafka, hosted in the Faust worker
(a mode Service started with the app), for the stateless stages (ingest, attribution
route).

Why not a Faust stream: Faust's per-message stream machinery capped the ingest stage at
~4k events/s where this loop runs near the bare-client ceiling (README "Throughput"),
and a Faust stream can drop records at start-up with a backlog (streams/progress.py); a
stateless stage has no table to keep its own progress in. Here offsets are committed by
hand, after every output of the batch was acknowledged by the broker: a crash can
repeat outputs (same keys and values), never lose them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from agents.failfast import die
from agents.kafka_io import client_kwargs
from streams import metrics
from streams.settings import Settings

log = logging.getLogger("convstream.batchloop")


class BatchLoop(Service):  # type: ignore[misc]
    """Consumer group ``group`` over ``topics``; ``handle`` one batch at a time (it must
    await its outputs), then commit. Subclasses set the names and ``handle``."""

    stage: str = ""  # metric label and name in failure reports

    def __init__(self, settings: Settings, topics: list[str], group: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.topics = topics
        self.group = group
        self.joined = False  # the first poll returned: the group was joined

    async def on_start(self) -> None:
        await self.start_outputs()
        self.consumer = AIOKafkaConsumer(
            *self.topics,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.batch_size,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **client_kwargs(self.settings),
        )
        await self.consumer.start()

    async def on_stop(self) -> None:
        await self.consumer.stop()
        await self.stop_outputs()

    async def start_outputs(self) -> None:
        """Set up what ``handle`` writes with (before the consumer joins)."""

    async def stop_outputs(self) -> None: ...

    async def handle(self, batch: dict[Any, list[Any]]) -> int:
        """Process one ``getmany`` batch and await its outputs; return the record count."""
        raise NotImplementedError

    @Service.task
    async def _consume(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug or an unreachable broker: never commit
            die(self.stage, exc)

    async def _run(self) -> None:
        within_ms = int(self.settings.batch_within * 1000)
        while not self.should_stop:
            batch = await self.consumer.getmany(
                timeout_ms=max(within_ms, 100), max_records=self.settings.batch_size
            )
            self.joined = True
            if not batch:
                continue
            t0 = time.perf_counter()
            n = await self.handle(batch)
            await self._commit()
            metrics.BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - t0)
            metrics.BATCH_SIZE.labels(self.stage).observe(n)

    async def _commit(self) -> None:
        try:
            await self.consumer.commit()
        except (CommitFailedError, KafkaError) as e:
            # a rebalance took the partitions: the next owner repeats this batch's
            # outputs (same keys and values); nothing is lost
            log.warning(
                "offset commit failed; batch will be redelivered",
                extra={"stage": self.stage, "error": type(e).__name__},
            )
