"""Input progress of a stateful stage: the next offset to process, per partition.

A Faust stream can skip records. At start-up and after a rebalance, Faust's recovery
resumes the stream's partitions, seeks them to the committed offsets and only then
resumes flow control, which *clears* the stream queues: records fetched in between are
dropped while the ones fetched after are delivered. The missing offsets are never acked,
so Faust does not commit past them, but the running worker carries on without them (the
crash test caught it: ~1,000 ``dedup-in`` records never reached the dedup agent, so the
later copies of their conversions were kept as new ones).

So a stateful stage keeps its own progress in its table, written with the batch's
state and after the batch's outputs. Each record is then judged by its offset:

- below the progress: processed already (delivered again after a restart or a
  rebalance, from Faust's committed offset): skipped;
- at the progress: processed, and the progress moves on;
- beyond it: records before it were skipped by the stream. It is not processed; the
  stage seeks the partition back to its progress and reads them again.

Records deleted by retention before they were processed cannot be read again: the
progress then moves to the partition's first offset (counted as lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["done", "next", "ahead"]


def admit(expected: int, offset: int) -> Verdict:
    """How a stage with progress ``expected`` treats a record at ``offset``."""
    if offset < expected:
        return "done"
    if offset == expected:
        return "next"
    return "ahead"


@dataclass(slots=True)
class Progress:
    """One batch's view of the progress of the partitions it touches."""

    expected: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    advanced: set[int] = field(default_factory=set)  # moved in this batch: write it back
    ahead: dict[int, int] = field(default_factory=dict)  # partition -> first offset ahead
    skipped: dict[Verdict, int] = field(default_factory=lambda: {"done": 0, "ahead": 0})
    events: dict[int, Any] = field(default_factory=dict)  # partition -> an event of it

    def check(self, partition: int, offset: int) -> Verdict:
        verdict = admit(self.expected[partition], offset)
        if verdict == "next":
            self.expected[partition] = offset + 1
            self.advanced.add(partition)
        else:
            self.skipped[verdict] += 1
            if verdict == "ahead":
                self.ahead.setdefault(partition, offset)
        return verdict

    def skip_to(self, partition: int, offset: int) -> int:
        """Records before ``offset`` are gone (retention): move the progress there and
        return how many were lost."""
        lost = offset - self.expected[partition]
        if lost <= 0:
            return 0
        self.expected[partition] = offset
        self.advanced.add(partition)
        self.ahead.pop(partition, None)
        return lost
