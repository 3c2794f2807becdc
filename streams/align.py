"""Reading several input partitions in ``received_at`` order (SPEC §6: "order is
received_at order, not arrival order").

The ingest stage reads both raw topics. Read at their own pace (a backlog, a restart, a
slow partition), a browser copy received first could reach the dedup stage after its
server twin. So ingest merges what it fetched, like Kafka Streams' stream-time
alignment of a task's partitions: it always processes the record with the smallest
time among the partitions that have records buffered, and stops when a partition that
still has unread records on the broker (it *lags*) has none buffered: its next record
may be earlier. That partition is fetched while the others are paused (they are
*ahead*). A partition that is caught up does not hold the others back (its next record
is not yet written); one that lags but cannot be fetched holds them back for at most
``max_wait`` seconds.

A record's time is its ``received_at``; a record without one (malformed) takes the
time of the record before it on its partition, so it stays where it stands, as
``convstream process`` orders its files. Ties go to the lower rank (pixel before
server, as ``process`` does), then partition, then offset.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.capi import NOT_DECODED


def received_at(value: bytes | None) -> float | None:
    """The ``received_at`` of a raw message, or None when it has none (or is not JSON)."""
    return decoded_received_at(value)[0]


def decoded_received_at(value: bytes | None) -> tuple[float | None, object]:
    """``received_at`` (as :func:`received_at`) and the decoded value, or
    ``NOT_DECODED`` when it is not JSON (the pipeline then says why)."""
    if not value:
        return None, NOT_DECODED
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, NOT_DECODED
    ra = obj.get("received_at") if isinstance(obj, dict) else None
    if isinstance(ra, int | float) and not isinstance(ra, bool):
        return float(ra), obj
    return None, obj


@dataclass(slots=True)
class _Part:
    rank: int
    index: int  # tie-break after rank (the partition number)
    items: deque[tuple[float, int, Any, object]] = field(default_factory=deque)
    last: float = float("-inf")  # time of the last record added


class Aligner:
    """Buffers per partition (``key``: any hashable, e.g. a TopicPartition)."""

    def __init__(self) -> None:
        self.parts: dict[Hashable, _Part] = {}

    def add(self, key: Hashable, rank: int, index: int, records: Iterable[tuple[int, Any]]) -> None:
        """Buffer ``(offset, item)`` records of one partition, in offset order; each
        item is a raw message value (bytes) or an object whose ``value`` is one. The
        value is decoded once, here; ``take`` hands the decoded value on."""
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = _Part(rank, index)
        for offset, item in records:
            ra, decoded = decoded_received_at(getattr(item, "value", item))
            if ra is not None:
                part.last = ra
            part.items.append((part.last, offset, item, decoded))

    def drop(self, key: Hashable) -> None:
        """The partition was revoked: its buffered records are not processed here."""
        self.parts.pop(key, None)

    def buffered(self, key: Hashable) -> int:
        part = self.parts.get(key)
        return len(part.items) if part is not None else 0

    def take(
        self, lagging: set[Hashable], limit: int, force: bool = False
    ) -> list[tuple[Any, int, Any, object]]:
        """Up to ``limit`` records ``(key, offset, item, decoded value)`` in time order
        (the decoded value is ``NOT_DECODED`` when the value is not JSON), stopping when
        a partition in ``lagging`` (records on the broker not fetched yet) has none
        buffered, unless ``force``."""
        heap: list[tuple[float, int, int, int, Hashable]] = []
        for key, part in self.parts.items():
            if part.items:
                t, offset, _, _ = part.items[0]
                heap.append((t, part.rank, part.index, offset, key))
        heapq.heapify(heap)
        out: list[tuple[Any, int, Any, object]] = []
        if not force and any(self.buffered(k) == 0 for k in lagging):
            return out
        while heap and len(out) < limit:
            _, _, _, _, key = heapq.heappop(heap)
            part = self.parts[key]
            _, offset, item, decoded = part.items.popleft()
            out.append((key, offset, item, decoded))
            if part.items:
                t, off, _, _ = part.items[0]
                heapq.heappush(heap, (t, part.rank, part.index, off, key))
            elif key in lagging and not force:
                break  # its next record, not yet fetched, may be earlier than the rest
        return out
