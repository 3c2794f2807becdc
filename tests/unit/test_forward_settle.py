"""The forwarder settles every event of a delivered batch: the accepted ones and the
rejected ones (once dead-lettered), even when a batch mixes partitions whose offsets
are equal (a rejected event at partition 1 offset 0 must not hold back an accepted
one at partition 0 offset 0: that partition would never commit again)."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.forward import Forwarder
from agents.graph_client import Rejected
from streams import forward as fwd
from streams.settings import Settings


class Sender:
    def __init__(self, reject: fwd.Item) -> None:
        self.reject = reject

    async def deliver(self, batch: fwd.Batch) -> list[Rejected]:
        return [Rejected(i, "rejected", None, 1) for i in batch.items if i is self.reject]


class Producer:
    async def send(self, topic: str, value: bytes, key: bytes) -> Any:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def item(partition: int, offset: int, event_id: str) -> fwd.Item:
    event = {"event_name": "Purchase", "event_id": event_id, "event_time": 1}
    return fwd.Item(partition, offset, "1234567890", None, event)


def test_a_rejected_event_settles_only_itself() -> None:
    f = Forwarder(Settings())
    accepted, rejected = item(0, 0, "a"), item(1, 0, "b")
    for i in (accepted, rejected):
        f.tracker.add(i.partition or 0, i.offset)
    f.sender = Sender(rejected)  # type: ignore[assignment]
    f.producer = Producer()  # type: ignore[assignment,unused-ignore]
    asyncio.run(f._deliver(fwd.Batch("1234567890", None, [accepted, rejected])))
    assert f.tracker.pending() == 0
    assert f.tracker.committable() == {0: 1, 1: 1}


def test_oldest_is_the_first_offset_not_committable() -> None:
    t = fwd.OffsetTracker()
    assert t.oldest(0) is None
    for o in (5, 6, 7):
        t.add(0, o)
    t.settle(0, 6)
    assert t.oldest(0) == 5  # 6 is settled, but behind 5
    t.settle(0, 5)
    assert t.committable() == {0: 7}
    assert t.oldest(0) == 7
    t.settle(0, 7)
    t.committable()
    assert t.oldest(0) is None
