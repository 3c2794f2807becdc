"""streams/progress.py: which records a stateful stage processes, by offset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.progress import Progress, admit


def test_admit_below_at_and_beyond_the_progress() -> None:
    assert admit(10, 9) == "done"
    assert admit(10, 10) == "next"
    assert admit(10, 11) == "ahead"


def test_a_batch_moves_the_progress_only_through_consecutive_offsets() -> None:
    p = Progress(expected={0: 5, 1: 0})
    verdicts = [p.check(0, o) for o in (3, 4, 5, 6, 9, 10, 7)]
    assert verdicts == ["done", "done", "next", "next", "ahead", "ahead", "next"]
    assert p.expected == {0: 8, 1: 0}
    assert p.advanced == {0}
    assert p.ahead == {0: 9}  # the first offset seen beyond the progress
    assert p.skipped == {"done": 2, "ahead": 2}


def test_records_deleted_by_retention_move_the_progress() -> None:
    p = Progress(expected={2: 100})
    assert p.check(2, 250) == "ahead"
    assert p.skip_to(2, 200) == 100  # offsets 100..199 are gone
    assert p.expected[2] == 200 and 2 in p.advanced and 2 not in p.ahead
    assert p.check(2, 250) == "ahead"  # 200..249 are still there: read them first
    assert p.skip_to(2, 150) == 0  # never backwards
    assert p.expected[2] == 200


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[int]]:
    """Offsets 0..n-1 as a stream may deliver them: repeated runs (a restart from an
    older commit), holes (records dropped), then everything again after a seek."""
    n = draw(st.integers(1, 60))
    out: list[int] = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start, n))
        out += [o for o in range(start, stop) if not draw(st.booleans()) or o == start]
    return n, out


@given(deliveries())
def test_every_offset_is_processed_at_most_once_and_in_order(case: tuple[int, list[int]]) -> None:
    n, delivered = case
    p = Progress(expected={0: 0})
    processed = []
    for o in delivered:
        if p.check(0, o) == "next":
            processed.append(o)
    # in order, no repeats, no holes: a prefix of the partition
    assert processed == list(range(len(processed)))
    # reading again from the progress (the seek) finishes the partition, once each
    for o in range(p.expected[0], n):
        assert p.check(0, o) == "next"
        processed.append(o)
    assert processed == list(range(n))
