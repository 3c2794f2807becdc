"""The stateful-stage mechanism: one Faust agent over one Faust table, shared by the
dedup and attribution stages. A stage module supplies only its decisions (a ``Body``
per batch) and its keys; everything about delivery lives here, written once.

A stage reads an internal topic whose records carry *groups* of events
(streams/groups.py), so Faust's per-record cost is paid per group. Per batch of
records from ``take_events``:

1. ``gate.begin`` loads the stage's own progress per partition (agents/progress.py);
2. each record is judged by ``gate.admit`` (processed already, next, or ahead of a
   record the stream dropped); a record that is next is a tick (``TICK``: moves a quiet
   partition's time) or a group, whose events are decided one by one by the body, over
   an ``Overlay`` of the table (reads from the partition's store, writes kept pending);
3. the ``Sweeper`` deletes expired state of the partitions in the batch (about once a
   minute each), through the overlay, so tombstones follow the same path;
4. ``gate.record`` writes the new progress, *last*, into the overlay;
5. the body's outputs are produced and acknowledged by the broker;
6. the overlay's changelog records are produced and acknowledged;
7. the overlay is written to the local store (``write_local``);
8. ``gate.finish`` seeks partitions that were ahead back; the batch returns and Faust
   acks its offsets.

So a crash can only repeat an output (same key and value), never mark state whose
output was not written; the local store is never ahead of the changelog, so a partition
that moves to another worker takes all its state along; and a record is decided once,
even if the stream delivers it twice or drops it.

Faust picks a table's partition (for reads and writes, store and changelog) from the
*current event*, so each record is made current while its events are decided, as
Faust's own stream iterator does.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final, Protocol

import orjson
from faust.streams import _current_event
from rocksdict import WriteBatch

from agents.failfast import die
from agents.outputs import Outputs
from agents.progress import Committed, InputGate, Resume
from streams import groups, metrics
from streams.tally import Tally

TICK: Final = b'{"tick":true}'  # a record on an internal topic that only moves time
TICK_INTERVAL: Final = 1.0  # seconds

# RocksDB memory per partition database is bounded by these, not by the key count
# (Faust's defaults: 3 x 64 MiB write buffers and a 2 GiB block cache per database).
# The block cache fills as expiry walks a partition's keys: 16 MiB per database held
# ~30 MiB more of the worker's RSS with 1M dedup keys than 4 MiB, at the same rate
# (bench/restart.py, bench/e2e.py; README "Memory").
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024**2,
    "block_cache_size": 4 * 1024**2,
    "block_cache_compressed_size": 4 * 1024**2,
}

# Records (groups or ticks) per batch of a stage: an ingest batch of 1000 raw messages
# makes about one group per partition, so 16 records hold a few thousand events
STAGE_BATCH_RECORDS: Final = 16

Item = tuple[str, bytes, bytes | None]
# where Faust's RocksDB store keeps a partition's persisted changelog offset
# (faust.stores.rocksdb.Store.offset_key): recovery starts reading the changelog there
OFFSET_KEY: Final = b"__faust\0offset__"  # (topic, key, value); None is a tombstone


def partition_dbs(table: Any) -> Callable[[int], Any] | None:
    """partition -> that partition's RocksDB database (a rocksdict ``Rdict``, opened on
    first use) of ``table``; None for a store without one (memory://). Faust has no public
    call for this: it is the one place convstream reaches into the store
    (``faust.stores.rocksdb.Store._db_for_partition``), for the stage's direct reads,
    its write batches, the sweeper's and the merge window's scans."""
    db_for: Callable[[int], Any] | None = getattr(table.data, "_db_for_partition", None)
    return db_for


def set_current_event(event: Any) -> None:
    """Make ``event`` the one Faust tables read and write for (its partition)."""
    _current_event.set(weakref.ref(event))


class Overlay(MutableMapping[str, dict[str, Any]]):
    """A table seen through this batch's pending writes; ``changelog`` and
    ``write_local`` write them. Reads and writes go to the partition of ``event``."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: dict[str, tuple[dict[str, Any] | None, Any]] = {}
        self.event: Any = None
        # With RocksDB, read and write the current partition's database directly: the
        # partition is always the current event's, so the store's key->partition index
        # (an LRU) and its per-key bookkeeping are not needed on this hot path.
        self._db_for = partition_dbs(table)
        self._written: tuple[list[Item], list[int]] = ([], [])  # by changelog()

    def _raw(self, kb: bytes) -> bytes | None:
        if self._db_for is not None:
            raw: bytes | None = self._db_for(self.event.message.partition).get(kb)
            return raw
        raw = self.table.get(kb)
        return raw

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, else ``default``. The decisions look up mostly absent
        keys; Mapping's own ``get`` would raise and catch a KeyError for each."""
        hit = self.pending.get(key)
        if hit is not None:
            return default if hit[0] is None else hit[0]
        raw = self._raw(key.encode())
        if raw is None:
            return default
        return orjson.loads(raw)

    def __getitem__(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.pending[key] = (value, self.event)

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError when absent
        self.pending[key] = (None, self.event)

    def __iter__(self) -> Iterator[str]:
        # Iterating would cross partitions (the table spans all of this worker's); the
        # decisions never iterate, and expiry walks one partition's database (Sweeper).
        raise TypeError("the overlay is not iterable; see Sweeper for expiry")

    def __len__(self) -> int:
        raise TypeError("the overlay has no length; see Sweeper for expiry")

    def changelog(self) -> tuple[list[Item], list[int]]:
        """The changelog records of the pending changes (and their partitions), in the
        order they were made, for the caller to send *before* ``write_local`` (which
        writes the same bytes).

        Faust's own ``Table.__setitem__`` sends one changelog message at a time through
        its producer buffer (~3k/s here); batching them with the outputs' producer keeps
        the stage near the ingest stage's speed. Recovery reads the changelog as usual."""
        topic = self.table.changelog_topic.get_topic_name()
        records: list[Item] = []
        partitions: list[int] = []
        dumps = orjson.dumps
        for key, (value, event) in self.pending.items():
            records.append((topic, key.encode(), None if value is None else dumps(value)))
            partitions.append(event.message.partition)
        self._written = (records, partitions)
        return records, partitions

    def write_local(self, changelog_offsets: dict[int, int] | None = None) -> None:
        """Write what ``changelog`` returned to the local store, each change in its
        event's partition (with RocksDB: one write batch per partition, which also
        records the offset of the partition's last changelog record as the store's
        persisted offset, as Faust's own changelog path does: a restart on the same data
        directory then replays only what the store had not written).

        Called once the changelog holds them: the local database is never ahead of the
        changelog, so a worker that dies in between finds them again by recovery, and a
        partition that moves to another worker moves with all of its state."""
        records, partitions = self._written
        if self._db_for is not None:
            batches: dict[int, Any] = {}
            for (_, kb, vb), part in zip(records, partitions, strict=True):
                wb = batches.get(part)
                if wb is None:
                    wb = batches[part] = WriteBatch(raw_mode=True)
                if vb is None:
                    wb.delete(kb)
                else:
                    wb.put(kb, vb)
            for part, offset in (changelog_offsets or {}).items():
                wb = batches.get(part)
                if wb is None:
                    wb = batches[part] = WriteBatch(raw_mode=True)
                wb.put(OFFSET_KEY, str(offset).encode())
            for part, wb in batches.items():
                self._db_for(part).write(wb)
        else:
            store = self.table.data
            events = [event for _, event in self.pending.values()]
            for (_, kb, vb), event in zip(records, events, strict=True):
                set_current_event(event)
                if vb is None:
                    store.pop(kb, None)
                else:
                    store[kb] = vb
        self.pending.clear()
        self._written = ([], [])


# keys one partition's expiry walks per batch: a pass over a large partition is spread
# over batches (a walk of 700k keys in one go held the event loop ~5 s)
SWEEP_STEP: Final = 4096


class Sweeper:
    """Expiry of a stage's state: per partition, about once ``every`` seconds a *pass*
    walks the partition's keys (with one of ``prefixes``) and deletes those whose
    ``time_key`` is older than the partition's stream time (the latest time observed)
    minus ``window``, through the overlay, so their changelog tombstones follow the
    batch's outputs and recovery cannot bring them back. A pass walks at most ``step``
    keys per batch, from where the partition's last batch stopped, so a large partition
    never holds the event loop for long. Needs the RocksDB store (one database per
    partition); with ``memory://`` (dev only) state is not swept."""

    def __init__(
        self,
        table: Any,
        window: int,
        every: float,
        *,
        prefixes: frozenset[bytes],
        time_key: str,
        gauge: Any,
        step: int = SWEEP_STEP,
    ) -> None:
        self.table = table
        self.window = window
        self.every = every  # wall-clock seconds between the starts of two passes
        self.prefixes = prefixes  # the state keys (the database also holds Faust's own)
        self.time_key = time_key
        self.time_prefix = b'{"' + time_key.encode() + b'":'  # how orjson writes it first
        self.gauge = gauge
        self.step = step
        self.stream_time: dict[int, float] = {}
        self.last_sweep: dict[int, float] = {}  # when the partition's last pass started
        self.cursor: dict[int, bytes] = {}  # a pass in progress: the next key to walk
        self.counting: dict[int, int] = {}  # ... and the live keys it has seen so far
        self.live: dict[int, int] = {}  # keys left after the last complete pass

    def observe(self, partition: int, t: float) -> None:
        if t > self.stream_time.get(partition, float("-inf")):
            self.stream_time[partition] = t

    def forget(self, partition: int) -> None:
        """The partition moved away: its keys no longer count in the gauge."""
        for book in (self.stream_time, self.last_sweep, self.cursor, self.counting, self.live):
            book.pop(partition, None)
        self.gauge.set(sum(self.live.values()))

    def time_of(self, value: bytes) -> Any:
        """The value's ``time_key`` (None when it has none): read off the front when it
        is the first key, as the stages write it, else from the decoded JSON."""
        head = self.time_prefix
        if value.startswith(head):
            end = len(head)
            while end < len(value) and value[end] not in b",}":
                end += 1
            try:
                return float(value[len(head) : end])
            except ValueError:
                pass
        decoded = orjson.loads(value)
        return decoded.get(self.time_key) if isinstance(decoded, dict) else None

    def sweep(self, state: Overlay, events_by_partition: dict[int, Any], now: float) -> int:
        db_for = partition_dbs(self.table)
        if db_for is None:
            return 0
        removed = 0
        for partition, event in events_by_partition.items():
            cursor = self.cursor.get(partition)
            if cursor is None:  # no pass in progress: start one when it is time
                if now - self.last_sweep.get(partition, 0.0) < self.every:
                    continue
                self.last_sweep[partition] = now
                cursor, self.counting[partition] = b"", 0
            db = db_for(partition)  # a partition of this batch: ours, its database open
            cutoff = self.stream_time.get(partition, float("-inf")) - self.window
            state.event = event  # tombstones go to this partition's changelog
            live, walked, stopped_at = self.counting.get(partition, 0), 0, None
            for kb, vb in db.items(from_key=cursor):
                if walked == self.step:
                    stopped_at = kb
                    break
                walked += 1
                # the database also holds Faust's own metadata (its changelog offset)
                if not isinstance(kb, bytes) or kb[:2] not in self.prefixes or vb is None:
                    continue
                key = kb.decode()
                if key in state.pending:  # rewritten by this batch: fresh
                    live += 1
                    continue
                t = self.time_of(vb)
                if t is not None and t < cutoff:
                    state.pending[key] = (None, event)
                    removed += 1
                else:
                    live += 1
            if stopped_at is None:  # the pass is complete
                self.cursor.pop(partition, None)
                self.counting.pop(partition, None)
                self.live[partition] = live
            else:
                self.cursor[partition], self.counting[partition] = stopped_at, live
        # approximate (partitions this worker swept; refreshed after each pass)
        self.gauge.set(sum(self.live.values()))
        return removed


class Body(Protocol):
    """A stage's decisions for one batch (made by the stage's ``begin`` per batch)."""

    def tick(self, partition: int, wall: float) -> None:
        """A tick of ``partition`` (no data: time moves)."""

    def event(
        self, partition: int, rec: dict[str, Any], offset: int, index: int, raw: bytes | None
    ) -> float:
        """Decide one event (``index``-th of the record at ``offset``; ``raw``: its bytes,
        when the record kept them apart); return its time for expiry (the sweeper's
        stream time)."""
        ...

    def end(self) -> None:
        """After the batch's decisions and sweep, before its outputs are produced."""


class Batch:
    """What a body writes into: outputs (produced before the changelog), the overlay of
    the table, and the batch's counters."""

    def __init__(self, state: Overlay) -> None:
        self.state = state
        self.tally = Tally()
        self.items: list[Item] = []
        self.partitions: list[int | None] = []  # per item: a partition, or None (by key)

    def emit(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.items.append((topic, key, value))
        self.partitions.append(partition)


class StatefulStage:
    """One stateful stage: the Faust agent ``name`` over ``topic`` (an internal topic of
    groups and ticks) with ``table``, deciding through the bodies ``begin`` makes.

    ``begin(batch)`` is called once per batch with a fresh ``Batch``; ``forget`` are
    extra per-partition bookkeeping cleaners called when a rebalance takes a partition;
    ``resume`` lets a stage that buffers events across batches store where to read again
    from after a restart (agents/progress.py).
    """

    def __init__(
        self,
        app: Any,
        *,
        name: str,
        table: Any,
        topic: Any,
        partitions: int,
        outputs: Callable[[], Awaitable[Outputs]],
        sweeper: Sweeper,
        begin: Callable[[Batch], Body],
        batch_records: int,
        batch_within: float,
        expired_counter: str,
        forget: tuple[Callable[[int], Any], ...] = (),
        ready: Callable[[], Awaitable[Any]] | None = None,
        resume: Resume | None = None,
        committed: Committed | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.table = table
        self.outputs = outputs
        self.sweeper = sweeper
        self.begin = begin
        self.batch_records = batch_records
        self.batch_within = batch_within
        self.expired_counter = expired_counter
        self.ready = ready
        self.gate = InputGate(app, name, resume=resume, committed=committed)
        topic_name = topic.get_topic_name()
        self.topic_name = topic_name
        send_ticks(app, f"convstream.{name}.tick", topic_name, partitions, outputs)
        forget_on_revoke(app, topic_name, sweeper.forget, *forget)
        app.agent(topic, name=f"convstream.{name}")(self._agent)

    async def _agent(self, stream: Any) -> None:
        async for records in stream.take_events(self.batch_records, self.batch_within):
            try:
                await self.run(records)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let Faust ack a batch we did not finish
                die(self.name, exc)

    async def run(self, records: Any) -> None:
        """One batch, in the order of the module docstring."""
        if self.ready is not None:
            await self.ready()
        t0 = time.perf_counter()
        out = await self.outputs()
        state = Overlay(self.table)
        batch = Batch(state)
        body = self.begin(batch)
        gate, sweeper = self.gate, self.sweeper
        last: dict[int, Any] = {}
        wall = time.time()
        decided = 0
        progress = await gate.begin(state, records)
        for record in records:
            if not gate.admit(progress, record):
                continue  # processed already, or records before it were skipped
            set_current_event(record)
            state.event = record
            part = record.message.partition
            last[part] = record
            value = record.message.value
            if value == TICK:
                body.tick(part, wall)
                continue
            # only convstream writes this topic: a record that does not decode is a bug
            offset = record.message.offset
            for index, (rec, raw) in enumerate(groups.decode_lines(value)):
                sweeper.observe(part, body.event(part, rec, offset, index, raw))
                decided += 1
        expired = sweeper.sweep(state, last, time.time())
        if expired:
            batch.tally[self.expired_counter,] += expired
        body.end()
        gate.record(progress, state)  # last: the state it covers comes first
        # counts are published before the outputs can be read (a reader that saw an
        # output sees its batch counted; a crash from here on counts the batch again)
        batch.tally.flush()
        await out.send_all(batch.items, batch.partitions)
        # the changelog must hold this batch's state and progress before the offsets can
        # be committed: else a new owner (rebalance, restart) resumes past an emitted
        # output without knowing it, and emits the next copy as well
        changelog, partitions = state.changelog()
        last = await out.send_last_offsets(changelog, partitions)
        state.write_local(last)
        await gate.finish(progress)
        metrics.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels(self.name).observe(decided)


def send_ticks(
    app: Any, name: str, topic: str, partitions: int, outputs: Callable[[], Awaitable[Outputs]]
) -> None:
    """Once a second, a tick to every partition of ``topic`` (an internal topic of a
    stateful stage): it moves a quiet partition's time, and shows a partition whose last
    records the stream dropped (agents/progress.py)."""

    async def tick() -> None:
        n = partitions
        await (await outputs()).send_few([(topic, b"tick", TICK)] * n, list(range(n)))

    app.timer(TICK_INTERVAL, name=name)(tick)


def forget_on_revoke(app: Any, topic: str, *forget: Callable[[int], Any]) -> None:
    """Call each ``forget(partition)`` for the partitions of ``topic`` this worker loses
    in a rebalance (per-partition bookkeeping kept outside the table)."""

    async def on_revoked(sender: Any, revoked: Any, **kw: Any) -> None:
        for tp in revoked:
            if tp.topic == topic:
                for f in forget:
                    f(tp.partition)

    app.on_partitions_revoked.connect(on_revoked)
