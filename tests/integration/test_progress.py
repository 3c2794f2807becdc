"""The dedup agent's own progress (agents/progress.py) on a real broker: records its
stream skips are read again, records delivered again are not decided again.

Faust's stream skips records at start-up with a backlog (its recovery clears the stream
queues after the fetcher has started; the crash test caught it now and then). Here the
same situation is made on purpose: the consumer group's committed offset is moved past
records the agent never saw, as if the stream had delivered and acked them.

Records delivered again: the group's offset is moved back to 0, below the progress the
stage stored (read from its changelog), after a clean stop (no state to recover). Every
one of those records must come again and be skipped on the first start: a run in which
they did not come could not show that they are not decided again, so it fails too.
A partition the stage has no progress for (a deployment from before it kept one) starts
at the consumer group's committed offset, as the broker's group coordinator has it: the
records below it were decided by that deployment and are not decided again.
Each test waits for a definite end (the group and the stage's progress past the input's
end offsets, the output read to its end offsets), not for a quiet moment."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents import kafka_io
from streams.model import Origin
from streams.pipeline import Pipeline, Result
from tests.helpers import RECEIVED_AT
from tests.integration.conftest import (
    all_topics,
    dedup_consumed,
    read_to_end,
    send_in_order,
    stage_progress,
)
from tests.integration.test_dedup import browser, conversions, server

pytestmark = pytest.mark.integration


def candidates(s: Any, items: list[tuple[str, bytes]]) -> list[bytes]:
    """What the ingest stage writes to ``<app_id>-dedup-in`` for these raw messages."""
    pipeline, result = Pipeline(s), Result()
    for i, (source, value) in enumerate(items):
        pipeline.process(source, value, Origin("raw", 0, i), time.time(), result)  # type: ignore[arg-type]
    assert len(result.conversions) == len(items)
    return [orjson.dumps(r) for r in result.conversions]


def commit(s: Any, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for the worker's consumer group (no member is running)."""

    async def run() -> None:
        c = AIOKafkaConsumer(
            group_id=s.app_id, enable_auto_commit=False, **kafka_io.client_kwargs(s)
        )
        await c.start()
        try:
            tps = {TopicPartition(topic, p): off for p, off in offsets.items()}
            c.assign(list(tps))
            await c.commit(tps)
        finally:
            await c.stop()

    asyncio.run(run())


def three_processed_then_stopped(make_settings: Any, start_worker: Any, kafka: Any) -> Any:
    """A one-partition worker that decided a-0..a-2, stopped; its settings."""
    s = make_settings(partitions=1)
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    send_in_order(kafka, s, w, [("server", server(f"a-{i}", RECEIVED_AT + i)) for i in range(3)])
    assert len(conversions(kafka, s, expect=3)) == 3
    w.stop()
    return s


def decided(s: Any) -> list[str]:
    """The event ids on conversions.enriched once ingest and dedup have consumed all of
    their input topics (``dedup_consumed``), read to the end offsets."""
    dedup_consumed(s)
    return sorted(
        orjson.loads(v)["event_id"] for _, v, _, _ in read_to_end(s, s.topics.conversions)
    )


def test_records_the_stream_skipped_are_read_again(make_settings, start_worker, kafka) -> None:
    s = three_processed_then_stopped(make_settings, start_worker, kafka)
    topic = f"{s.app_id}-dedup-in"
    later = [("server", server(f"b-{i}", RECEIVED_AT + 10 + i)) for i in range(5)]
    kafka.produce(s, topic, candidates(s, later))
    commit(s, topic, asyncio.run(kafka_io.end_offsets(s, topic)))  # past b-0..b-4
    w2 = start_worker(s)
    # nothing new arrives: the next tick (once a second) shows the partition is ahead
    assert decided(s) == [f"a-{i}" for i in range(3)] + [f"b-{i}" for i in range(5)]
    assert w2.metric("convstream_input_seeks_total", stage="dedup") >= 1
    assert w2.metric("convstream_input_skipped_total", stage="dedup", verdict="ahead") >= 1


def test_records_delivered_again_are_not_decided_again(make_settings, start_worker, kafka) -> None:
    s = three_processed_then_stopped(make_settings, start_worker, kafka)
    topic = f"{s.app_id}-dedup-in"
    # the known backlog: the records below the stored progress, all processed (a-0..a-2
    # and ticks); the worker stopped cleanly, so the next one's store needs no recovery
    below = stage_progress(s, "dedup")[0]
    assert below >= 3
    commit(s, topic, {0: 0})  # Faust resumes from the first record: all of them again
    w2 = start_worker(s)
    send_in_order(kafka, s, w2, [("browser", browser("a-0", RECEIVED_AT + 50))])  # a duplicate
    assert decided(s) == ["a-0", "a-1", "a-2"]
    # a batch's counts are published a moment after its changelog; the copy's batch is
    # the last: once it is counted, so are those before
    w2.wait_metric("convstream_duplicates_total", 1, timeout=30)
    # the records below the progress came again and were skipped, not decided again: no
    # replay, no second duplicate, no new conversion
    assert w2.metric("convstream_dedup_replays_total") == 0
    assert w2.metric("convstream_duplicates_total") == 1
    assert w2.metric("convstream_input_skipped_total", stage="dedup", verdict="done") >= below


def test_without_stored_progress_a_partition_starts_at_the_committed_offset(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings(partitions=1)
    kafka.create_topics(s, all_topics(s))
    topic = f"{s.app_id}-dedup-in"
    older = [("server", server(f"a-{i}", RECEIVED_AT + i)) for i in range(3)]
    kafka.produce(s, topic, candidates(s, older))
    # decided and committed by a deployment that kept no progress of its own
    commit(s, topic, asyncio.run(kafka_io.end_offsets(s, topic)))
    w = start_worker(s)  # a new app id: its tables (and changelogs) are empty
    later = [("server", server(f"b-{i}", RECEIVED_AT + 10 + i)) for i in range(2)]
    send_in_order(kafka, s, w, later)
    assert decided(s) == ["b-0", "b-1"]
    assert stage_progress(s, "dedup")[0] >= 5
    # started where the group was, not sought back to the first record
    assert w.metric("convstream_input_seeks_total", stage="dedup") == 0
