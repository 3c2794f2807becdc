"""Dedup agent: candidate conversions (repartitioned by ``pixel_id|event_name``) → SPEC §6
decisions over a changelog-backed Faust table → ``conversions.enriched``.

Batches come from ``stream.take_events``. Faust picks a table's partition (for reads
and writes, RocksDB and changelog) from the *current event*, so each event is made
current while it is decided, exactly as Faust's own stream iterator does.

Ordering per batch, for crash safety: decide (table reads + an in-memory overlay of
writes) → produce the kept conversions and await the broker's acks → send the overlay's
changelog records, awaited → write them to the local store → the batch returns and
Faust acks the offsets. A crash can therefore only repeat an output (same
conversion_id), never mark a key seen whose conversion was not written; and the local
database is never ahead of the changelog, so a partition that moves to another worker
takes all of its state along.

The agent does not trust the stream to deliver every record once: it keeps its own
progress per partition in the table (agents/progress.py, streams/progress.py), written
last in each batch's changelog. Records below it were processed (skipped, not decided
again); a record beyond it means Faust's stream dropped records (it does, at start-up
with a backlog), so the partition is sought back. An identical copy read again at
another offset (the ingest stage repeats a batch after a crash) is recognised (same
conversion_id, received_at and source) and not counted as a duplicate.

Merge window (W > 0): a kept copy is held as ``h|<conversion_id>`` in the same table
(so it is in RocksDB and the changelog: it survives restarts and rebalances) and
released, oldest first, once its partition's stream time (latest received_at) passes
``received_at + W``. A quiet partition's stream time would never move, so every worker
sends a *tick* to each partition of the topic about once a second (always: a tick
also shows a partition whose last records were dropped by the stream); at a tick the
partition's stream time is extrapolated by the wall-clock time since its last event.
Releasing goes through the same ordered path: produce, await, then delete ``h|``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any, Final

import orjson
from faust.streams import _current_event

from agents.failfast import die
from agents.outputs import Outputs, partition_for, shared_outputs
from agents.progress import InputGate
from streams import metrics
from streams.dedupe import Deduper, DedupStage, partition_key
from streams.settings import Settings
from streams.tally import Tally


def set_current_event(event: Any) -> None:
    """Make ``event`` the one Faust tables read and write for (its partition)."""
    _current_event.set(weakref.ref(event))


class Overlay(MutableMapping[str, dict[str, Any]]):
    """A table seen through this batch's pending writes; ``changelog`` and
    ``write_local`` write them."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: dict[str, tuple[dict[str, Any] | None, Any]] = {}
        self.event: Any = None
        # With RocksDB, read and write the current partition's database directly: the
        # partition is always the current event's, so the store's key->partition index
        # (an LRU) and its per-key bookkeeping are not needed on this hot path.
        self._db_for = getattr(table.data, "_db_for_partition", None)

    def _raw(self, kb: bytes) -> bytes | None:
        if self._db_for is not None:
            raw: bytes | None = self._db_for(self.event.message.partition).get(kb)
            return raw
        raw = self.table.get(kb)
        return raw

    def __getitem__(self, key: str) -> dict[str, Any]:
        hit = self.pending.get(key)
        if hit is not None:
            if hit[0] is None:
                raise KeyError(key)
            return hit[0]
        raw = self._raw(key.encode())
        if raw is None:
            raise KeyError(key)
        value: dict[str, Any] = orjson.loads(raw)
        return value

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.pending[key] = (value, self.event)

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError when absent
        self.pending[key] = (None, self.event)

    def __iter__(self) -> Iterator[str]:
        # Iterating would cross partitions (the table spans all of this worker's); the
        # decisions never iterate, and expiry walks one partition's database (Sweeper).
        raise TypeError("the dedup overlay is not iterable; see Sweeper for expiry")

    def __len__(self) -> int:
        raise TypeError("the dedup overlay has no length; see Sweeper for expiry")

    def changelog(self) -> tuple[list[tuple[str, bytes, bytes | None]], list[int]]:
        """The changelog records of the pending changes (and their partitions), in the
        order they were made, for the caller to send *before* ``write_local``.

        Faust's own ``Table.__setitem__`` sends one changelog message at a time through
        its producer buffer (~3k/s here); batching them with the outputs' producer keeps
        the dedup stage near the ingest stage's speed. Recovery reads the changelog as
        usual."""
        topic = self.table.changelog_topic.get_topic_name()
        records: list[tuple[str, bytes, bytes | None]] = []
        partitions: list[int] = []
        for key, (value, event) in self.pending.items():
            records.append((topic, key.encode(), None if value is None else orjson.dumps(value)))
            partitions.append(event.message.partition)
        return records, partitions

    def write_local(self) -> None:
        """Write the pending changes to the local store (each in its event's partition).

        Called once the changelog holds them: the local database is never ahead of the
        changelog, so a worker that dies in between finds them again by recovery, and a
        partition that moves to another worker moves with all of its state."""
        store = self.table.data
        for key, (value, event) in self.pending.items():
            set_current_event(event)
            kb = key.encode()
            vb = None if value is None else orjson.dumps(value)
            if self._db_for is not None:
                db = self._db_for(event.message.partition)
                if vb is None:
                    db.delete(kb)
                else:
                    db.put(kb, vb)
            elif vb is None:
                store.pop(kb, None)
            else:
                store[kb] = vb
        self.pending.clear()


HELD = "h|"
TICK: Final = b'{"tick":true}'  # a message on the dedup topic that only moves time
TICK_INTERVAL: Final = 1.0  # seconds


class Held(MutableMapping[str, dict[str, Any]]):
    """The held records of one partition (``cid -> {"due", "rec"}``), loaded once per
    batch; writes also go to the overlay as ``h|<cid>`` (store + changelog)."""

    def __init__(self, state: Overlay, loaded: dict[str, dict[str, Any]]) -> None:
        self.state = state
        self.items_ = loaded

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


def load_held(table: Any, state: Overlay, partition: int, partitions: int) -> dict[str, Any]:
    """Every held record of ``partition``: a prefix scan of its RocksDB database (or of
    the whole memory store, filtered by partition), then this batch's pending writes."""
    out: dict[str, Any] = {}
    prefix = HELD.encode()
    db_for = getattr(table.data, "_db_for_partition", None)
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


STATE_PREFIXES = frozenset({b"e|", b"f|", b"x|", b"b|"})  # streams/dedupe.py keys


class Sweeper:
    """Expiry of dedup state (SPEC §6: 48 h): per partition, about once a minute, keys
    whose time is older than the partition's stream time (latest received_at seen) minus
    the window are deleted through the overlay, so their changelog tombstones follow the
    batch's outputs and recovery cannot bring them back. Needs the RocksDB store (one
    database per partition); with ``memory://`` (dev only) state is not swept."""

    def __init__(
        self,
        table: Any,
        window: int,
        every: float,
        *,
        prefixes: frozenset[bytes] = STATE_PREFIXES,
        time_key: str = "t",
        gauge: Any = metrics.DEDUP_KEYS,
    ) -> None:
        self.table = table
        self.window = window
        self.every = every  # wall-clock seconds between two sweeps of one partition
        self.prefixes = prefixes  # the state keys (the database also holds Faust's own)
        self.time_key = time_key
        self.gauge = gauge
        self.stream_time: dict[int, float] = {}
        self.last_sweep: dict[int, float] = {}
        self.live: dict[int, int] = {}  # keys left after the last sweep, per partition

    def observe(self, partition: int, received_at: float) -> None:
        if received_at > self.stream_time.get(partition, float("-inf")):
            self.stream_time[partition] = received_at

    def forget(self, partition: int) -> None:
        """The partition moved away: its keys no longer count in the gauge."""
        self.stream_time.pop(partition, None)
        self.last_sweep.pop(partition, None)
        self.live.pop(partition, None)
        self.gauge.set(sum(self.live.values()))

    def sweep(self, state: Overlay, events_by_partition: dict[int, Any], now: float) -> int:
        dbs = getattr(self.table.data, "_dbs", None)
        if not isinstance(dbs, dict):
            return 0
        removed = 0
        for partition, event in events_by_partition.items():
            if now - self.last_sweep.get(partition, 0.0) < self.every:
                continue
            self.last_sweep[partition] = now
            db = dbs.get(partition)
            if db is None:
                continue
            cutoff = self.stream_time.get(partition, float("-inf")) - self.window
            state.event = event  # tombstones go to this partition's changelog
            live = 0
            for kb, vb in db.items():
                # the database also holds Faust's own metadata (its changelog offset)
                if not isinstance(kb, bytes) or kb[:2] not in self.prefixes or vb is None:
                    continue
                key = kb.decode()
                if key in state.pending:  # rewritten by this batch: fresh
                    continue
                value = orjson.loads(vb)
                if isinstance(value, dict) and value.get(self.time_key, cutoff) < cutoff:
                    state.pending[key] = (None, event)
                    removed += 1
                else:
                    live += 1
            self.live[partition] = live
        # approximate (partitions this worker swept; refreshed each sweep)
        self.gauge.set(sum(self.live.values()))
        return removed


def send_ticks(
    app: Any, name: str, topic: str, partitions: int, outputs: Callable[[], Awaitable[Outputs]]
) -> None:
    """Once a second, a tick to every partition of ``topic`` (an internal topic of a
    stateful agent): it moves a quiet partition's time, and shows a partition whose last
    records the stream dropped (agents/progress.py)."""

    async def tick() -> None:
        n = partitions
        await (await outputs()).send_all([(topic, b"tick", TICK)] * n, list(range(n)))

    app.timer(TICK_INTERVAL, name=name)(tick)


def forget_on_revoke(app: Any, topic: str, *forget: Any) -> None:
    """Call each ``forget(partition)`` for the partitions of ``topic`` this worker loses
    in a rebalance (per-partition bookkeeping kept outside the table)."""

    async def on_revoked(sender: Any, revoked: Any, **kw: Any) -> None:
        for tp in revoked:
            if tp.topic == topic:
                for f in forget:
                    f(tp.partition)

    app.on_partitions_revoked.connect(on_revoked)


# RocksDB memory per partition database is bounded by these, not by the key count
# (Faust's defaults: 3 x 64 MiB write buffers and a 2 GiB block cache per database).
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024**2,
    "block_cache_size": 16 * 1024**2,
    "block_cache_compressed_size": 4 * 1024**2,
}


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

    sweeper = Sweeper(table, settings.dedup_window, settings.dedup_sweep_interval)
    gate = InputGate(app, "dedup")
    merge_window = settings.merge_window
    clock = Clock()
    held_now: dict[int, int] = {}  # held records per partition after its last batch

    async def dedup(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_within):
            try:
                await batch(events)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let Faust ack a batch we did not finish
                die("dedup", exc)

    outputs_ready = shared_outputs(
        producer_holder, settings.topics.conversions, settings.topics.dead_letter
    )

    async def batch(events: Any) -> None:
        """Decide, produce and await, then write the table (see the module docstring)."""
        t0 = time.perf_counter()
        outputs = await outputs_ready()
        state = Overlay(table)
        stages: dict[int, DedupStage] = {}  # per partition: its held records differ

        def stage_for(partition: int) -> DedupStage:
            stage = stages.get(partition)
            if stage is None:
                held: MutableMapping[str, dict[str, Any]] = {}
                if merge_window > 0:
                    loaded = load_held(table, state, partition, settings.partitions)
                    held = Held(state, loaded)
                stage = stages[partition] = DedupStage(
                    Deduper(state, held, window=settings.dedup_window, merge_window=merge_window)
                )
            return stage

        tally = Tally()
        emitted: list[dict[str, Any]] = []
        last_event: dict[int, Any] = {}
        wall = time.time()
        progress = await gate.begin(state, events)
        for event in events:
            if not gate.admit(progress, event):
                continue  # processed already, or records before it were skipped
            set_current_event(event)
            state.event = event
            part = event.message.partition
            last_event[part] = event
            stage = stage_for(part)
            if event.message.value == TICK:
                if merge_window > 0:
                    now = clock.tick(part, stage.deduper.held, wall)
                    stage.release(now, tally, emitted)
                continue
            # only our ingest writes this topic: a record that does not decode is a bug
            rec = orjson.loads(event.message.value)
            if merge_window > 0:
                stage.release(clock.observe(part, rec["received_at"], wall), tally, emitted)
            stage.run([rec], tally, emitted)
            sweeper.observe(part, rec["received_at"])
        expired = sweeper.sweep(state, last_event, time.time())
        if expired:
            tally["expired",] += expired
        gate.record(progress, state)  # last: the state it covers comes first
        await outputs.send_all(
            [
                (settings.topics.conversions, r["conversion_id"].encode(), orjson.dumps(r))
                for r in emitted
            ]
        )
        # the changelog must hold this batch's state and progress before the offsets can
        # be committed: else a new owner (rebalance, restart) resumes past an emitted
        # conversion without knowing it, and emits the next copy as well
        changelog, partitions = state.changelog()
        await outputs.send_all(changelog, partitions)
        state.write_local()
        await gate.finish(progress)
        tally.flush()
        if merge_window > 0:
            held_now.update((p, len(st.deduper.held)) for p, st in stages.items())
            metrics.HELD.set(sum(held_now.values()))
        metrics.BATCH_SECONDS.labels("dedup").observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels("dedup").observe(len(events))

    topic = topics.candidates_internal.get_topic_name()
    # quiet partitions release held conversions at a tick
    send_ticks(app, "convstream.dedup.tick", topic, settings.partitions, outputs_ready)
    forget_on_revoke(
        app,
        topic,
        clock.forget,
        sweeper.forget,
        lambda p: held_now.pop(p, None),
    )
    app.agent(topics.candidates_internal, name="convstream.dedup")(dedup)
    return table
