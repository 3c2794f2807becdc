"""Many events in one Kafka record, on the internal topics (``<app_id>-dedup-in``,
``<app_id>-attribution-in``).

Those topics are ours: only convstream writes and reads them. A stateful stage reads
them through a Faust stream, whose cost is per Kafka record (a few tens of
microseconds each: the conductor, the event, the acks), so each record carries a
*group*: every event of one producing batch bound for the same partition, one JSON
object per line (orjson never writes a raw newline), cut so that a group stays under
``GROUP_BYTES``, well below the broker's default message limit (1 MiB). A Faust event
then stands for a whole group; the stage's own progress (streams/progress.py) still
counts Kafka records, so a group is decided all or nothing.

Lines, not one JSON array, so a reader keeps each event's own bytes next to its decoded
object (``decode_lines``): the dedup stage writes a kept conversion as those bytes with
its ``dedup`` value spliced in (``splice_dedup``) instead of serializing it again.

Read back too, so a topic written by an older version is read correctly after an
upgrade: a JSON array (the groups of versions before lines) and a single JSON object
(before groups; a one-event group of lines is exactly that). Workers must be upgraded
together: an older worker cannot read groups of lines.
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
    """Groups of the serialized events ``values`` (in order), one per line, each under
    ``limit`` bytes unless a single event is larger (it then goes alone)."""
    part: list[bytes] = []
    size = 0
    for v in values:
        if part and size + len(v) > limit:
            yield b"\n".join(part)
            part, size = [], 0
        part.append(v)
        size += len(v) + 1
    if part:
        yield b"\n".join(part)


def decode(value: bytes) -> list[dict[str, Any]]:
    """The events of one record (a group, or a single event of an older version).
    Raises ``ValueError`` for anything else (only convstream writes these topics)."""
    return [ev for ev, _ in decode_lines(value)]


def decode_lines(value: bytes) -> list[tuple[dict[str, Any], bytes | None]]:
    """The events of one record, each with its own bytes (None for the events of an
    older version's JSON array, whose bytes are not kept apart). Raises ``ValueError``
    for anything but events (only convstream writes these topics)."""
    if value[:1] == b"[":  # a group of an older version: one JSON array
        data = orjson.loads(value)  # a list (the first byte is "["), or it raises
        if not all(isinstance(ev, dict) for ev in data):
            raise ValueError("an internal record's array holds something else than events")
        return [(ev, None) for ev in data]
    out: list[tuple[dict[str, Any], bytes | None]] = []
    for line in value.split(b"\n"):
        ev = orjson.loads(line)
        if not isinstance(ev, dict):
            raise ValueError(f"an internal record holds a {type(ev).__name__}, not an event")
        out.append((ev, line))
    return out


# A conversion as ingest writes it (streams/records.py): ``dedup`` is undecided, and the
# fields after it are convstream's own (no value from the input can hold this text).
_UNDECIDED: Final = b',"dedup":{"method":null,"duplicates":0},"match_quality":'


def splice_dedup(raw: bytes, dedup: dict[str, Any]) -> bytes | None:
    """``raw`` (a conversion's bytes as ingest wrote them) with ``dedup`` as its value of
    ``dedup``: the bytes ``orjson.dumps`` gives for the decoded conversion with that
    value, as the key keeps its place. None when ``raw`` has no undecided ``dedup``."""
    at = raw.rfind(_UNDECIDED)
    if at < 0:
        return None
    end = at + len(_UNDECIDED)
    return b"".join((raw[:at], b',"dedup":', orjson.dumps(dedup), b',"match_quality":', raw[end:]))


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
