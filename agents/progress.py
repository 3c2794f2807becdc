"""The input gate of a stateful Faust agent: its progress (streams/progress.py) kept in
its own table as ``o|<partition>``, so it moves with the table's state (RocksDB and the
changelog) on restarts and rebalances.

Per batch: ``begin`` loads the progress of each partition in the batch (see ``_start``
for a partition without one), ``admit`` (no I/O: it runs per event) judges each event, ``record``
writes the new progress through the overlay *after* the batch's other writes (so the
changelog holds the state before the progress that covers it), and ``finish`` seeks the
partitions that were ahead back to their progress (at most once a second each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from agents import kafka_io
from streams import metrics
from streams.progress import Progress
from streams.settings import Settings

log = logging.getLogger("convstream.progress")

PROGRESS: Final = "o|"
SEEK_INTERVAL: Final = 1.0  # seconds between two seeks (or retention checks) of a partition


def progress_key(partition: int) -> str:
    return f"{PROGRESS}{partition}"


class Resume(Protocol):
    """How a stage that buffers events across batches resumes its partitions."""

    def start(self, partition: int, stored: dict[str, Any]) -> int:
        """The offset to read ``partition`` from, given its stored progress."""
        ...

    def extra(self, partition: int, next_offset: int) -> dict[str, Any]:
        """What to store with the partition's progress ``next_offset``."""
        ...


# the consumer group's committed offsets of some input partitions (those it has)
Committed = Callable[[list[Any]], Awaitable[dict[Any, int]]]


def group_committed(s: Settings, group: str) -> Committed:
    """``Committed`` as the broker has it for ``group`` (the worker's, ``app.conf.id``)."""

    async def committed(tps: list[Any]) -> dict[Any, int]:
        return dict(await kafka_io.committed_offsets(s, group, tps))

    return committed


class InputGate:
    def __init__(
        self,
        app: Any,
        stage: str,
        *,
        every: float = SEEK_INTERVAL,
        resume: Resume | None = None,
        committed: Committed | None = None,
    ) -> None:
        self.app = app
        self.committed = committed
        self.resume = resume
        self.stage = stage
        self.every = every
        self.last_look: dict[int, float] = {}
        self.to_seek: set[int] = set()  # partitions of this batch to seek back
        # partition -> its first offset, when retention deleted records below the progress
        self.floor: dict[int, int] = {}

    async def _start(self, tps: list[Any]) -> dict[Any, int]:
        """Where partitions without stored progress start: the group's committed offset
        when there is one (a deployment from before the progress was kept), else the
        partition's first offset (a new app id: auto_offset_reset=earliest)."""
        committed = await self.committed(tps) if self.committed is not None else {}
        return {
            tp: committed[tp] if tp in committed else await self._first_offset(tp) for tp in tps
        }

    async def _first_offset(self, tp: Any) -> int:
        offsets = await self.app.consumer.earliest_offsets(tp)
        return int(offsets.get(tp) or 0)

    async def begin(self, state: Any, events: Any) -> Progress:
        """The stored progress of every partition in ``events``."""
        progress = Progress()
        self.to_seek.clear()
        unstored: list[Any] = []
        for event in events:
            part = event.message.partition
            if part in progress.events:
                continue
            progress.events[part] = event
            state.event = event  # the overlay reads this partition's database
            stored = state.get(progress_key(part))
            if stored is None:
                unstored.append(event.message.tp)
            elif self.resume is not None:
                progress.expected[part] = self.resume.start(part, stored)
            else:
                progress.expected[part] = int(stored["next"])
        if unstored:  # one request for all of them (a partition's first batch only)
            for tp, offset in (await self._start(unstored)).items():
                progress.expected[tp.partition] = offset
        for part in progress.events:
            if part in self.floor:  # counted as lost when found (finish)
                progress.skip_to(part, self.floor.pop(part))
        return progress

    def admit(self, progress: Progress, event: Any) -> bool:
        """True when ``event`` is the next one of its partition (then process it)."""
        part = event.message.partition
        verdict = progress.check(part, event.message.offset)
        if verdict == "ahead" and part not in self.to_seek and self._may_look(part):
            self.to_seek.add(part)
        return verdict == "next"

    def _may_look(self, part: int) -> bool:
        now = time.monotonic()
        if now - self.last_look.get(part, float("-inf")) < self.every:
            return False
        self.last_look[part] = now
        return True

    def record(self, progress: Progress, state: Any) -> None:
        """Write the progress of the partitions that moved, as the batch's last writes."""
        for part in sorted(progress.advanced):
            key = progress_key(part)
            state.pending.pop(key, None)  # re-inserted: last in the changelog
            state.event = progress.events[part]
            at = progress.expected[part]
            extra = self.resume.extra(part, at) if self.resume is not None else {}
            state[key] = {"next": at, **extra}

    async def finish(self, progress: Progress) -> None:
        """Seek partitions that were ahead back to their progress; count skipped events."""
        for verdict, n in progress.skipped.items():
            if n:
                metrics.INPUT_SKIPPED.labels(self.stage, verdict).inc(n)
        seeks: dict[Any, int] = {}
        for part, offset in progress.ahead.items():
            if part not in self.to_seek:
                continue  # sought less than a second ago: those records may be on their way
            target = progress.expected[part]
            tp = progress.events[part].message.tp
            first = await self._first_offset(tp)
            if first > target:  # deleted by retention: cannot be read again
                metrics.INPUT_LOST.labels(self.stage).inc(first - target)
                log.warning(
                    "input records were deleted before they were processed",
                    extra={"stage": self.stage, "partition": part, "lost": first - target},
                )
                self.floor[part] = target = first
            seeks[tp] = target
            metrics.INPUT_SEEKS.labels(self.stage).inc()
            log.warning(
                "input records were skipped by the stream; reading them again",
                extra={"stage": self.stage, "partition": part, "at": target, "seen": offset},
            )
        if seeks:
            # in the consumer's own thread, like every other call into aiokafka:
            # Consumer.seek would run aiokafka's seek_to (it drops the partition's fetched
            # records) in this thread, racing the consumer thread's fetched_records
            # (seen: KeyError in aiokafka's Fetcher during a standby takeover)
            await self.app.consumer.seek_wait(seeks)
