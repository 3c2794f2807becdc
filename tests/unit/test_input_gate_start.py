"""Where the input gate (agents/progress.py) starts a partition it has no stored progress
for: the consumer group's committed offset when the group has one, else the partition's
first offset; the committed offsets are asked once per batch, for all such partitions."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from agents.progress import InputGate, progress_key
from tests.unit.test_ordering_resume import Event, Message, State


class TP(NamedTuple):
    topic: str
    partition: int


class Consumer:
    def __init__(self, first: dict[TP, int]) -> None:
        self.first = first

    async def earliest_offsets(self, tp: TP) -> dict[TP, int]:
        return {tp: self.first[tp]}


class App:
    def __init__(self, first: dict[TP, int]) -> None:
        self.consumer = Consumer(first)


def event(partition: int, offset: int) -> Event:
    return Event(Message(partition, offset, TP("in", partition)), [])


def test_unstored_partitions_start_at_the_committed_offset_else_the_first() -> None:
    asked: list[list[TP]] = []

    async def committed(tps: list[Any]) -> dict[Any, int]:
        asked.append(list(tps))
        return {TP("in", 0): 40}  # the group committed partition 0 only

    first = {TP("in", p): 7 for p in range(3)}
    gate = InputGate(App(first), "dedup", committed=committed)
    state = State({progress_key(2): {"next": 90}})  # partition 2 has stored progress
    events = [event(0, 40), event(1, 9), event(0, 41), event(2, 90)]
    progress = asyncio.run(gate.begin(state, events))
    assert progress.expected == {0: 40, 1: 7, 2: 90}
    assert asked == [[TP("in", 0), TP("in", 1)]]  # one request, no stored partition in it
    assert [gate.admit(progress, e) for e in events] == [True, False, True, True]


def test_stored_progress_asks_nothing() -> None:
    async def committed(tps: list[Any]) -> dict[Any, int]:
        raise AssertionError("asked although every partition has its progress")

    gate = InputGate(App({}), "dedup", committed=committed)
    state = State({progress_key(0): {"next": 5}})
    progress = asyncio.run(gate.begin(state, [event(0, 5)]))
    assert progress.expected == {0: 5}


class SeekingConsumer(Consumer):
    """Records ``seek_wait`` calls; ``seek`` must not be used (see InputGate.finish)."""

    def __init__(self, first: dict[TP, int]) -> None:
        super().__init__(first)
        self.sought: list[dict[TP, int]] = []

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.sought.append(dict(partitions))

    async def seek(self, tp: TP, offset: int) -> None:
        raise AssertionError("Consumer.seek runs aiokafka's seek_to outside its thread")


def test_partitions_ahead_are_sought_back_in_one_call_in_the_consumer_thread() -> None:
    """finish seeks every partition that was ahead to its progress (to the first offset
    when retention deleted the records in between), all in one ``seek_wait``: that runs
    in the consumer's thread, where aiokafka's fetcher is (``seek`` would not)."""
    app = App({})
    consumer = app.consumer = SeekingConsumer({TP("in", 0): 0, TP("in", 1): 30})
    gate = InputGate(app, "dedup", committed=None)
    state = State({progress_key(0): {"next": 5}, progress_key(1): {"next": 20}})
    events = [event(0, 9), event(1, 35), event(0, 10)]
    progress = asyncio.run(gate.begin(state, events))
    assert [gate.admit(progress, e) for e in events] == [False, False, False]
    asyncio.run(gate.finish(progress))
    assert consumer.sought == [{TP("in", 0): 5, TP("in", 1): 30}]  # 1: deleted below 30
    again = asyncio.run(gate.begin(state, events))  # the next batch, within a second
    assert [gate.admit(again, e) for e in events] == [False, False, False]
    asyncio.run(gate.finish(again))  # sought less than a second ago: not again yet
    assert len(consumer.sought) == 1
