"""Dedup stage: candidate conversions (repartitioned by ``pixel_id|event_name``, in
groups: streams/groups.py) → SPEC §6 decisions over a changelog-backed Faust table →
``conversions.enriched``, and each kept conversion's clicks to the attribution stage
(``<app_id>-attribution-in``, by fbclid: streams/attribution.py ``route``) in the same
batch, so the worker never reads its own output back.

The delivery mechanism (batches, input progress, outputs before changelog before local
writes, expiry, ticks) is the shared stateful stage (agents/stage.py); this module holds
the dedup decisions per batch and the merge-window bookkeeping. An identical copy read
again at another offset (the ingest stage repeats a batch after a crash) is recognised
(same conversion_id, received_at and source) and not counted as a duplicate.

Merge window (W > 0): a kept copy is held as ``h|<conversion_id>`` in the same table
(so it is in RocksDB and the changelog: it survives restarts and rebalances) and
released, oldest first, once its partition's stream time (latest received_at) passes
``received_at + W``. A quiet partition's stream time would never move, so every worker
sends a *tick* to each partition of the topic about once a second; at a tick the
partition's stream time is extrapolated by the wall-clock time since its last event.
Releasing goes through the same ordered path: produce, await, then delete ``h|``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Final

import orjson

from agents.attribution import internal_topic as attribution_topic
from agents.outputs import partition_for, shared_outputs
from agents.progress import group_committed
from agents.stage import (
    ROCKSDB_OPTIONS,
    STAGE_BATCH_RECORDS,
    Batch,
    Overlay,
    StatefulStage,
    Sweeper,
    partition_dbs,
)
from streams import groups, metrics
from streams.attribution import route_counted
from streams.dedupe import Deduper, DedupStage, partition_key
from streams.reorder import Reorder
from streams.settings import Settings

HELD: Final = "h|"
# the key under which a record read from a group of lines carries its own bytes, from
# ``event`` to ``end`` (never a key of a conversion: those are streams/records.py's)
RAW: Final = "\x00raw"


class Held(MutableMapping[str, dict[str, Any]]):
    """The held records of one partition (``cid -> {"due", "rec"}``), loaded once per
    batch; writes also go to the overlay as ``h|<cid>`` (store + changelog)."""

    def __init__(self, state: Overlay, loaded: dict[str, dict[str, Any]]) -> None:
        self.state = state
        self.items_ = loaded

    def get(self, cid: str, default: Any = None) -> Any:
        return self.items_.get(cid, default)

    def __getitem__(self, cid: str) -> dict[str, Any]:
        return self.items_[cid]

    def __setitem__(self, cid: str, value: dict[str, Any]) -> None:
        self.items_[cid] = value
        self.state[HELD + cid] = value

    def __delitem__(self, cid: str) -> None:
        del self.items_[cid]
        del self.state[HELD + cid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items_)

    def __len__(self) -> int:
        return len(self.items_)


def load_held(state: Overlay, partition: int, partitions: int) -> dict[str, Any]:
    """Every held record of ``partition``: a prefix scan of its RocksDB database (or of
    the whole memory store, filtered by partition), then this batch's pending writes."""
    out: dict[str, Any] = {}
    table = state.table
    prefix = HELD.encode()
    db_for = partition_dbs(table)
    if db_for is not None:
        for kb, vb in db_for(partition).items(from_key=prefix):
            if not isinstance(kb, bytes) or not kb.startswith(prefix):
                break
            if vb is not None:
                out[kb[2:].decode()] = orjson.loads(vb)
    else:  # memory:// (dev): one dict for all partitions
        for kb, vb in list(table.data.items()):
            if isinstance(kb, bytes) and kb.startswith(prefix) and vb is not None:
                value = orjson.loads(vb)
                if partition_for(partition_key(value["rec"]), partitions) == partition:
                    out[kb[2:].decode()] = value
    for key, (value, event) in state.pending.items():
        if key.startswith(HELD) and event.message.partition == partition:
            if value is None:
                out.pop(key[2:], None)
            else:
                out[key[2:]] = value
    return out


class Clock:
    """Per-partition stream time for releasing held records, extrapolated by the wall
    clock while a partition is quiet (see the module docstring)."""

    def __init__(self) -> None:
        self.stream: dict[int, float] = {}
        self.wall: dict[int, float] = {}

    def observe(self, partition: int, received_at: float, wall: float) -> float:
        if received_at > self.stream.get(partition, float("-inf")):
            self.stream[partition] = received_at
        self.wall[partition] = wall
        return self.stream[partition]

    def forget(self, partition: int) -> None:
        """The partition moved away: if it comes back, its time starts again from its
        held records (its time here would be stale by the time it was elsewhere)."""
        self.stream.pop(partition, None)
        self.wall.pop(partition, None)

    def tick(self, partition: int, held: Mapping[str, Any], wall: float) -> float:
        if partition not in self.stream:
            # nothing seen since start or assignment: start from the held records' time
            if not held:
                return float("-inf")
            latest = max(h["rec"]["received_at"] for h in held.values())
            self.stream[partition], self.wall[partition] = latest, wall
        return self.stream[partition] + (wall - self.wall[partition])


STATE_PREFIXES: Final = frozenset({b"e|", b"f|", b"x|", b"b|"})  # streams/dedupe.py keys


class Ordering:
    """Per-partition reorder buffers of the dedup stage (streams/reorder.py) and how its
    partitions resume after a restart (``Resume`` of agents/progress.py): the input
    progress stores where the oldest buffered event's record is, and which events were
    decided, so the buffer itself is never written to the table."""

    def __init__(self, lateness: float) -> None:
        self.lateness = lateness
        self.buffers: dict[int, Reorder] = {}
        self.clock = Clock()  # per partition: stream time for releasing buffered events
        self.stale: set[int] = set()  # revoked: replaced when the partition is read again
        # resumed partitions whose progress was not written since: where they read from
        # (a batch may hold only records before it; the next batch starts there too)
        self.resuming: dict[int, int] = {}

    def buffer(self, partition: int) -> Reorder:
        buf = self.buffers.get(partition)
        if buf is None:
            buf = self.buffers[partition] = Reorder(self.lateness)
        return buf

    def start(self, partition: int, stored: dict[str, Any]) -> int:
        if partition in self.stale:  # revoked since: what was buffered is in ``stored``
            self.stale.discard(partition)
            self.buffers.pop(partition, None)
            self.resuming.pop(partition, None)
            self.clock.forget(partition)
        at = self.resuming.get(partition)
        if at is not None:  # resumed, and no record read since: still from there
            return at
        if partition in self.buffers or "from" not in stored:
            return int(stored["next"])
        # a partition read again from its oldest buffered record (a restart, a move)
        self.buffers[partition] = Reorder.resumed(self.lateness, stored)
        at = self.resuming[partition] = int(stored["from"])
        return at

    def extra(self, partition: int, next_offset: int) -> dict[str, Any]:
        self.resuming.pop(partition, None)  # its progress is written now
        buf = self.buffers.get(partition)
        return {} if buf is None else buf.progress(next_offset)

    def forget(self, partition: int) -> None:
        """A revoked partition. Its buffer is only marked: a batch still in flight goes on
        with it and stores its progress from it (dropped now, that batch would buffer into
        a new, empty one and store a progress that forgets the events buffered before);
        the next batch that reads the partition starts from the stored progress."""
        self.stale.add(partition)


class DedupBody:
    """One batch's dedup decisions (a ``Body`` of agents/stage.py): events go through
    the partition's reorder buffer and are decided in received_at order."""

    def __init__(
        self,
        batch: Batch,
        settings: Settings,
        clock: Clock,
        held_now: dict[int, int],
        ordering: Ordering,
    ) -> None:
        self.batch = batch
        self.ordering = ordering
        self.settings = settings
        self.clock = clock
        self.held_now = held_now  # held records per partition after its last batch
        self.merge_window = settings.merge_window
        self.stages: dict[int, DedupStage] = {}  # per partition: its held records differ
        self.emitted: list[dict[str, Any]] = []
        self.wall = time.time()
        self.attribution_topic = attribution_topic(settings)

    def stage_for(self, partition: int) -> DedupStage:
        stage = self.stages.get(partition)
        if stage is None:
            s, state = self.settings, self.batch.state
            held: MutableMapping[str, dict[str, Any]] = {}
            if self.merge_window > 0:
                held = Held(state, load_held(state, partition, s.partitions))
            stage = self.stages[partition] = DedupStage(
                Deduper(state, held, window=s.dedup_window, merge_window=self.merge_window)
            )
        return stage

    def tick(self, partition: int, wall: float) -> None:
        buf = self.ordering.buffer(partition)
        if len(buf):
            for rec in buf.release(self.ordering.clock.tick(partition, {}, wall)):
                self._decide(partition, rec)
        if self.merge_window > 0:
            stage = self.stage_for(partition)
            now = self.clock.tick(partition, stage.deduper.held, wall)
            stage.release(now, self.batch.tally, self.emitted)

    def event(
        self, partition: int, rec: dict[str, Any], offset: int, index: int, raw: bytes | None
    ) -> float:
        t: float = rec["received_at"]
        if raw is not None and self.merge_window == 0:
            # its bytes go along (in memory only: without a merge window a record is never
            # stored); ``end`` writes them with the decided ``dedup`` spliced in
            rec[RAW] = raw
        buf = self.ordering.buffer(partition)
        verdict = buf.push(rec, offset, index)
        if verdict == "late":  # after events it precedes were decided: decide it now
            self.batch.tally["out_of_order",] += 1
            self._decide(partition, rec)
        elif verdict == "buffered":
            now = self.ordering.clock.observe(partition, t, self.wall)
            for r in buf.release(now):
                self._decide(partition, r)
        return t

    def _decide(self, partition: int, rec: dict[str, Any]) -> None:
        stage = self.stage_for(partition)
        tally, emitted = self.batch.tally, self.emitted
        if self.merge_window > 0:
            now = self.clock.observe(partition, rec["received_at"], self.wall)
            stage.release(now, tally, emitted)
        stage.run([rec], tally, emitted)

    def end(self) -> None:
        topic, emit, tally = self.settings.topics.conversions, self.batch.emit, self.batch.tally
        parts = self.settings.partitions
        routed: list[tuple[int, bytes]] = []
        for r in self.emitted:
            raw = r.pop(RAW, None)
            value = None if raw is None else groups.splice_dedup(raw, r["dedup"])
            emit(topic, r["conversion_id"].encode(), orjson.dumps(r) if value is None else value)
            for fbclid, msg in route_counted(r, tally):
                routed.append((partition_for(fbclid.encode(), parts), orjson.dumps(msg)))
        if routed:
            items, partitions = groups.by_partition(routed, self.attribution_topic)
            for (t, key, value), p in zip(items, partitions, strict=True):
                assert value is not None
                emit(t, key, value, p)
        if self.merge_window > 0:
            self.held_now.update((p, len(st.deduper.held)) for p, st in self.stages.items())
            metrics.HELD.set(sum(self.held_now.values()))
        metrics.DEDUP_BUFFERED.set(sum(len(b) for b in self.ordering.buffers.values()))


def register(app: Any, topics: Any, settings: Settings, producer_holder: Any) -> Any:
    table = app.Table(
        "dedup",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # Faust derives the "raw" serializers from the bytes types
        value_type=bytes,
        options=dict(ROCKSDB_OPTIONS),
        help="SPEC §6 dedup state: event-id keys, fallback registrations (48 h)",
    )
    sweeper = Sweeper(
        table,
        settings.dedup_window,
        settings.dedup_sweep_interval,
        prefixes=STATE_PREFIXES,
        time_key="t",
        gauge=metrics.DEDUP_KEYS,
    )
    clock = Clock()
    held_now: dict[int, int] = {}  # held records per partition after its last batch
    ordering = Ordering(settings.dedup_lateness)

    StatefulStage(
        app,
        name="dedup",
        table=table,
        topic=topics.candidates_internal,
        partitions=settings.partitions,
        outputs=shared_outputs(
            producer_holder, settings.topics.conversions, settings.topics.dead_letter
        ),
        sweeper=sweeper,
        begin=lambda batch: DedupBody(batch, settings, clock, held_now, ordering),
        batch_records=STAGE_BATCH_RECORDS,
        batch_within=settings.batch_within,
        expired_counter="expired",
        forget=(clock.forget, lambda p: held_now.pop(p, None), ordering.forget),
        resume=ordering,
        committed=group_committed(settings, app.conf.id),
    )
    return table
