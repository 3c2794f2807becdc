"""A partition's events in ``received_at`` order within a bounded lateness (SPEC §6:
"order is received_at order").

Ingest reads its raw partitions in ``received_at`` order (streams/align.py), but with
several workers a dedup partition interleaves what each worker's ingest sends, so a copy
can arrive after a later-received one. The dedup stage therefore buffers each
partition's events and decides them in ``received_at`` order once the partition's
stream time (the latest ``received_at`` seen, moved on by the wall clock while the
partition is quiet) has passed ``received_at + lateness``. An event that arrives after
events it precedes were already decided is *late*: decided at once, and counted.

Nothing here is written to the table: the buffer survives a crash because the stage's
input progress (streams/progress.py) does not move past the oldest record whose events
are still buffered. After a restart the stage reads again from that record (``from``);
``through`` (the key of the last event decided) and the progress's ``next`` (the record
after the last one read) tell which of the re-read events were decided already: those
of records before ``next`` with a key up to ``through``. A worker that dies again while
it is still reading again what its predecessor had read must pass that knowledge on, so
the progress also keeps the older ``(next, through)`` pairs that reach beyond its own
``next`` (``replayed``; usually none, one after a crash during a catch-up).

An event's key is ``(received_at, offset, index)``: its record's offset on the internal
topic and its place in the record's group make it unique and the same on every read.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

Key = tuple[float, int, int]


@dataclass(slots=True)
class Reorder:
    lateness: float
    through: Key | None = None  # the last event decided (released or late)
    # from before restarts: (until, through) = events of the records before ``until``
    # with a key up to ``through`` were decided (ordered by ``until``)
    replayed: list[tuple[int, Key]] = field(default_factory=list)
    _heap: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)

    def push(self, rec: dict[str, Any], offset: int, index: int) -> str:
        """Buffer one event: ``"buffered"``, ``"late"`` (decide it now: it precedes an
        event already decided) or ``"done"`` (decided before a restart: skip it)."""
        key: Key = (rec["received_at"], offset, index)
        for until, decided in self.replayed:
            if offset < until and key <= decided:
                return "done"
        if self.through is not None and key < self.through:
            return "late"
        heapq.heappush(self._heap, (key, rec))
        return "buffered"

    def release(self, stream_time: float) -> list[dict[str, Any]]:
        """The buffered events whose ``received_at + lateness`` is at or before
        ``stream_time``, in key order; they count as decided."""
        out: list[dict[str, Any]] = []
        heap, bound = self._heap, stream_time - self.lateness
        while heap and heap[0][0][0] <= bound:
            key, rec = heapq.heappop(heap)
            self.through = key
            out.append(rec)
        return out

    def progress(self, next_offset: int) -> dict[str, Any]:
        """What the stage stores with its input progress ``next_offset`` (the record after
        the last one read): where to read again from after a restart, and which of those
        events were decided. Empty when nothing is buffered and nothing read before a
        restart lies ahead."""
        # a pair that ends at or before ``next_offset`` is covered by (next, through)
        self.replayed = [p for p in self.replayed if p[0] > next_offset]
        oldest = self.oldest_offset()
        if oldest is None:
            if not self.replayed:
                return {}
            # nothing buffered, but records ahead were read (and partly decided) before
            # a restart: a successor must still know which
            oldest = next_offset
        out: dict[str, Any] = {
            "from": oldest,
            "through": None if self.through is None else list(self.through),
        }
        if self.replayed:
            out["replayed"] = [[until, list(key)] for until, key in self.replayed]
        return out

    @classmethod
    def resumed(cls, lateness: float, stored: dict[str, Any]) -> Reorder:
        """The buffer of a partition read again from ``stored["from"]`` after a restart
        (or a rebalance): events up to ``stored["through"]`` in records before
        ``stored["next"]`` were decided, and those the ``replayed`` pairs name."""
        through = stored.get("through")
        key: Key | None = None if through is None else _key(through)
        pairs = [(int(until), _key(k)) for until, k in stored.get("replayed", ())]
        if key is not None:
            pairs.append((int(stored["next"]), key))
        pairs.sort()
        return cls(lateness, through=key, replayed=pairs)

    def oldest_offset(self) -> int | None:
        """The offset of the oldest record with an event still buffered."""
        return min((key[1] for key, _ in self._heap), default=None)

    def __len__(self) -> int:
        return len(self._heap)


def _key(value: list[Any]) -> Key:
    return (value[0], int(value[1]), int(value[2]))
