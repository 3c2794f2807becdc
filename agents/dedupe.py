"""Dedup agent: candidate conversions (repartitioned by ``pixel_id|event_name``) → SPEC §6
decisions over a changelog-backed Faust table → ``conversions.enriched``.

Batches come from ``stream.take_events``. Faust picks a table's partition (for reads
and writes, RocksDB and changelog) from the *current event*, so each event is made
current while it is decided, exactly as Faust's own stream iterator does.

Ordering per batch, for crash safety: decide (table reads + an in-memory overlay of
writes) → produce the kept conversions and await the broker's acks → write the overlay
to the store and send its changelog records, awaited → the batch returns and Faust
acks the offsets. A crash can therefore only repeat an output (same conversion_id),
never mark a key seen whose conversion was not written. A kept event read again after
a crash is recognised (same conversion_id, received_at and source) and not counted as
a duplicate.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
from faust.streams import _current_event

from agents.failfast import die
from agents.outputs import Outputs
from streams import metrics
from streams.dedupe import Deduper, DedupStage
from streams.settings import Settings
from streams.tally import Tally


def set_current_event(event: Any) -> None:
    """Make ``event`` the one Faust tables read and write for (its partition)."""
    _current_event.set(weakref.ref(event))


class Overlay(MutableMapping[str, dict[str, Any]]):
    """A table seen through this batch's pending writes; ``apply`` writes them."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: dict[str, tuple[dict[str, Any] | None, Any]] = {}
        self.event: Any = None

    def __getitem__(self, key: str) -> dict[str, Any]:
        hit = self.pending.get(key)
        if hit is not None:
            if hit[0] is None:
                raise KeyError(key)
            return hit[0]
        raw = self.table.get(key.encode())
        if raw is None:
            raise KeyError(key)
        value: dict[str, Any] = orjson.loads(raw)
        return value

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.pending[key] = (value, self.event)

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError when absent
        self.pending[key] = (None, self.event)

    def __iter__(self) -> Iterator[str]:  # not used on the hot path
        seen = set(self.pending)
        for k, (v, _) in self.pending.items():
            if v is not None:
                yield k
        for raw in list(self.table.keys()):
            k = raw.decode()
            if k not in seen:
                yield k

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def apply(self) -> tuple[list[tuple[str, bytes, bytes | None]], list[int]]:
        """Write the pending changes to the local store (each in its event's partition)
        and return the changelog records (and their partitions) for the caller to send.

        Faust's own ``Table.__setitem__`` sends one changelog message at a time through
        its producer buffer (~3k/s here); batching them with the outputs' producer keeps
        the dedup stage near the ingest stage's speed. Recovery reads the changelog as
        usual."""
        topic = self.table.changelog_topic.get_topic_name()
        store = self.table.data
        records: list[tuple[str, bytes, bytes | None]] = []
        partitions: list[int] = []
        for key, (value, event) in self.pending.items():
            set_current_event(event)
            kb = key.encode()
            if value is None:
                store.pop(kb, None)
                records.append((topic, kb, None))
            else:
                vb = orjson.dumps(value)
                store[kb] = vb
                records.append((topic, kb, vb))
            partitions.append(event.message.partition)
        self.pending.clear()
        return records, partitions


def register(app: Any, topics: Any, settings: Settings, producer_holder: Any) -> Any:
    table = app.Table(
        "dedup",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # Faust derives the "raw" serializers from the bytes types
        value_type=bytes,
        help="SPEC §6 dedup state: event-id keys, fallback registrations (48 h)",
    )

    async def dedup(stream: Any) -> None:
        outputs: Outputs | None = None
        async for events in stream.take_events(settings.batch_size, settings.batch_within):
            try:
                outputs = await batch(events, outputs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let Faust ack a batch we did not finish
                die("dedup", exc)

    async def batch(events: Any, outputs: Outputs | None) -> Outputs:
        """Decide, produce and await, then write the table (see the module docstring)."""
        t0 = time.perf_counter()
        if outputs is None:
            await producer_holder.producer_ready.wait()
            outputs = Outputs(
                producer_holder.producer,
                settings.topics.conversions,
                settings.topics.dead_letter,
            )
        state = Overlay(table)
        stage = DedupStage(Deduper(state, {}, window=settings.dedup_window))
        tally = Tally()
        emitted: list[dict[str, Any]] = []
        for event in events:
            set_current_event(event)
            state.event = event
            # only our ingest writes this topic: a record that does not decode is a bug
            stage.run([orjson.loads(event.message.value)], tally, emitted)
        await outputs.send_all(
            [
                (settings.topics.conversions, r["conversion_id"].encode(), orjson.dumps(r))
                for r in emitted
            ]
        )
        # the changelog must hold this batch's state before its offsets can be committed:
        # else a new owner (rebalance, restart) resumes past an emitted conversion without
        # knowing it, and emits the next copy as well
        changelog, partitions = state.apply()
        await outputs.send_all(changelog, partitions)
        tally.flush()
        metrics.BATCH_SECONDS.labels("dedup").observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels("dedup").observe(len(events))
        return outputs

    app.agent(topics.candidates_internal, name="convstream.dedup")(dedup)
    return table
