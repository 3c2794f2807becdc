"""Many events in one Kafka record, on the internal topics (``<app_id>-dedup-in``,
``<app_id>-attribution-in``).

Those topics are ours: only convstream writes and reads them. A stateful stage reads
them through a Faust stream, whose cost is per Kafka record (a few tens of
microseconds each: the conductor, the event, the acks), so each record carries a
*group*: every event of one producing batch bound for the same partition, as one JSON
array (``[event, event, ...]``), cut so that a group stays under ``GROUP_BYTES``, well
below the broker's default message limit (1 MiB). A Faust event then stands for a whole
group; the stage's own progress (streams/progress.py) still counts Kafka records, so a
group is decided all or nothing.

A record whose value is a JSON object is one event (what versions before groups wrote),
so a topic with records of both kinds is read correctly after an upgrade.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import orjson

GROUP_BYTES: Final = 512 * 1024
_HEX: Final = frozenset(b"0123456789abcdef")


def partition_for(key: bytes, partitions: int) -> int:
    """A record's partition: a 64-hex key (conversion_id, a SHA-256) goes to
    ``int(key[:8], 16) % partitions``, any other key to ``crc32(key) % partitions``."""
    if len(key) == 64 and _HEX.issuperset(key[:8]):
        return int(key[:8], 16) % partitions
    return zlib.crc32(key) % partitions


def grouped(
    events: list[dict[str, Any]],
    key: Callable[[dict[str, Any]], bytes],
    partitions: int,
    topic: str,
    limit: int = GROUP_BYTES,
) -> tuple[list[tuple[str, bytes, bytes | None]], list[int]]:
    """``events`` serialized and grouped by the partition of ``key(event)`` (as
    :func:`by_partition`, in one pass: the ingest stage's outputs)."""
    parts: dict[int, list[bytes]] = {}
    for ev in events:
        p = partition_for(key(ev), partitions)
        values = parts.get(p)
        if values is None:
            values = parts[p] = []
        values.append(orjson.dumps(ev))
    return _records(parts, topic, limit)


def encode(values: Iterable[bytes], limit: int = GROUP_BYTES) -> Iterator[bytes]:
    """JSON arrays of the serialized events ``values`` (in order), each under ``limit``
    bytes unless a single event is larger (it then goes alone)."""
    part: list[bytes] = []
    size = 2
    for v in values:
        if part and size + len(v) + 1 > limit:
            yield b"[" + b",".join(part) + b"]"
            part, size = [], 2
        part.append(v)
        size += len(v) + 1
    if part:
        yield b"[" + b",".join(part) + b"]"


def decode(value: bytes) -> list[dict[str, Any]]:
    """The events of one record: a group, or a single event (an older record).
    Raises ``ValueError`` for anything else (only convstream writes these topics)."""
    data = orjson.loads(value)
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [data]
    raise ValueError(f"an internal record is neither a group nor an event: {type(data).__name__}")


def by_partition(
    items: Iterable[tuple[int, bytes]], topic: str, limit: int = GROUP_BYTES
) -> tuple[list[tuple[str, bytes, bytes | None]], list[int]]:
    """``(partition, serialized event)`` items → group records for ``topic`` and their
    partitions (for ``Outputs.send_all``); the order of events within a partition is kept."""
    parts: dict[int, list[bytes]] = {}
    for p, v in items:
        parts.setdefault(p, []).append(v)
    return _records(parts, topic, limit)


def _records(
    parts: dict[int, list[bytes]], topic: str, limit: int
) -> tuple[list[tuple[str, bytes, bytes | None]], list[int]]:
    records: list[tuple[str, bytes, bytes | None]] = []
    partitions: list[int] = []
    for p, values in parts.items():
        for group in encode(values, limit):
            records.append((topic, b"group", group))
            partitions.append(p)
    return records, partitions
