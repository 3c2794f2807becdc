"""A consume → process → produce loop over plain aiokafka, hosted in the Faust worker
(a mode Service started with the app), for the stateless stages (ingest, attribution
route).

Why not a Faust stream: Faust's per-message stream machinery capped the ingest stage at
~4k events/s where this loop runs near the bare-client ceiling (README "Throughput"),
and a Faust stream can drop records at start-up with a backlog (streams/progress.py); a
stateless stage has no table to keep its own progress in. Here offsets are committed by
hand, after every output of the batch was acknowledged by the broker: a crash can
repeat outputs (same keys and values), never lose them.

Two batches overlap: while one batch's outputs are on their way to the broker (and its
offsets are then committed), the next batch is fetched and processed, and its outputs
handed to the producer after the first's (so per partition they stay in order). A
batch's offsets are committed only after its own outputs and every earlier batch's were
acknowledged and committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from agents.failfast import die
from agents.kafka_io import client_kwargs
from streams import metrics
from streams.settings import Settings

log = logging.getLogger("convstream.batchloop")

FETCH_MAX_BYTES = 4 * 1024 * 1024  # per fetch answer (a partition's first batch may exceed it)
# per partition and answer: the ingest loop holds what it fetched, decoded, until every
# partition is aligned (streams/align.py), so 8 raw partitions x 1 MiB made its peak
# RSS 115-197 MiB; with 256 KiB it was 90-108 MiB, at the same rate (bench/e2e.py)
PARTITION_FETCH_BYTES = 256 * 1024


class BatchLoop(Service):  # type: ignore[misc]
    """Consumer group ``group`` over ``topics``; ``handle`` one batch at a time (it
    starts its outputs), then commit once they are acked. Subclasses set the names and
    ``handle``."""

    stage: str = ""  # metric label and name in failure reports
    always_handle = False  # call ``handle`` after an empty poll too (records it buffered)

    def __init__(self, settings: Settings, topics: list[str], group: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.topics = topics
        self.group = group
        self.joined = False  # the first poll returned: the group was joined

    async def on_start(self) -> None:
        await self.start_outputs()
        self.consumer = AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.batch_size,
            # a fetch answer is held twice while decoded (aiokafka): 64 MiB answers kept
            # the ingest process at 420 MiB RSS, 4 MiB ones at 106 MiB at the same rate
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            **client_kwargs(self.settings),
        )
        self.consumer.subscribe(self.topics, listener=_Revoked(self.revoked))
        await self.consumer.start()

    def revoked(self, partitions: set[Any]) -> None:
        """A rebalance takes ``partitions`` away (before the new assignment)."""

    async def on_stop(self) -> None:
        await self.consumer.stop()
        await self.stop_outputs()

    def on_joined(self) -> None:
        """The first poll returned: the group was joined (possibly with no partitions)."""

    def observe(self, seconds: float, n: int) -> None:
        """A batch of ``n`` records was processed and acknowledged in ``seconds``."""
        observe_batch(self.stage, seconds, n)

    async def start_outputs(self) -> None:
        """Set up what ``handle`` writes with (before the consumer joins)."""

    async def stop_outputs(self) -> None: ...

    async def handle(
        self, batch: dict[Any, list[Any]]
    ) -> tuple[int, Awaitable[Any], dict[Any, int]]:
        """Process one ``getmany`` batch and start its outputs; return the record count,
        what to await for the outputs' acks, and the offsets to commit after them."""
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
        inflight: asyncio.Future[None] | None = None
        try:
            while not self.should_stop:
                batch = await self.consumer.getmany(
                    timeout_ms=max(within_ms, 100), max_records=self.settings.batch_size
                )
                if not self.joined:
                    self.joined = True
                    self.on_joined()
                if batch:
                    await self._fill(batch)
                if not batch and not self.always_handle:
                    continue
                t0 = time.perf_counter()
                n, acks, offsets = await self.handle(batch)
                if not offsets:
                    continue
                if inflight is not None:
                    await inflight  # the previous batch is acked and committed first
                inflight = asyncio.ensure_future(self._settle(acks, offsets, t0, n))
                inflight.add_done_callback(self._failed)
        finally:
            if inflight is not None and not inflight.done():
                await inflight

    async def _fill(self, batch: dict[Any, list[Any]]) -> None:
        """Add what arrives within ``batch_within`` of the first records, up to
        ``batch_size``: in live traffic a poll returns a few records at a time, and a
        batch of a few records pays the batch's fixed costs (a produce request, a
        commit, a group record per partition for the stage after) for very little."""
        size = self.settings.batch_size
        n = sum(len(recs) for recs in batch.values())
        deadline = time.monotonic() + self.settings.batch_within
        while n < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await self.consumer.getmany(
                timeout_ms=max(1, int(left * 1000)), max_records=size - n
            )
            for tp, recs in more.items():
                batch.setdefault(tp, []).extend(recs)
                n += len(recs)

    def _failed(self, fut: asyncio.Future[None]) -> None:
        """A batch's outputs failed (the broker refused them past the client's retries):
        exit at once, with its offsets not committed (agents/failfast.py)."""
        if not fut.cancelled() and fut.exception() is not None:
            die(self.stage, fut.exception())  # type: ignore[arg-type]

    async def _settle(
        self, acks: Awaitable[Any], offsets: dict[Any, int], t0: float, n: int
    ) -> None:
        await acks
        await self._commit(offsets)
        self.observe(time.perf_counter() - t0, n)

    async def _commit(self, offsets: dict[Any, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # a rebalance took the partitions: the next owner repeats this batch's
            # outputs (same keys and values); nothing is lost
            log.warning(
                "offset commit failed; batch will be redelivered",
                extra={"stage": self.stage, "error": type(e).__name__},
            )


def observe_batch(stage: str, seconds: float, n: int) -> None:
    """A ``stage`` batch of ``n`` records took ``seconds`` (processed to acknowledged)."""
    metrics.BATCH_SECONDS.labels(stage).observe(seconds)
    metrics.BATCH_SIZE.labels(stage).observe(n)


def batch_offsets(batch: dict[Any, list[Any]]) -> dict[Any, int]:
    """The offsets to commit once every record of ``batch`` is done."""
    return {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, revoked: Any) -> None:
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass
