"""The dedup stage's reorder buffer (streams/reorder.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.reorder import Reorder


def feed(buf: Reorder, arrivals: list[tuple[float, int]]) -> tuple[list[float], int]:
    """Push (received_at, offset) events, releasing by the latest time seen; return the
    decided order (released or late) and the late count."""
    out: list[float] = []
    late = 0
    latest = float("-inf")
    for t, off in arrivals:
        rec = {"received_at": t}
        verdict = buf.push(rec, off, 0)
        if verdict == "late":
            late += 1
            out.append(t)
        elif verdict == "buffered":
            latest = max(latest, t)
            out.extend(r["received_at"] for r in buf.release(latest))
    out.extend(r["received_at"] for r in buf.release(float("inf")))
    return out, late


@settings(deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60),
    st.floats(min_value=0, max_value=20),
    st.randoms(use_true_random=False),
)
def test_arrivals_displaced_by_at_most_the_lateness_are_decided_in_received_at_order(
    times: list[float], lateness: float, rnd: random.Random
) -> None:
    times = sorted(times)
    # each event arrives after events received up to ``lateness`` after it, not later
    keyed = [(t + rnd.uniform(0, lateness), t) for t in times]
    arrivals = [(t, i) for i, (_, t) in enumerate(sorted(keyed))]
    out, late = feed(Reorder(lateness), arrivals)
    assert late == 0
    assert out == sorted(times)


def test_an_event_later_than_the_bound_is_decided_at_once_and_nothing_is_lost() -> None:
    buf = Reorder(lateness=1.0)
    out, late = feed(buf, [(10.0, 0), (20.0, 1), (5.0, 2), (21.0, 3)])
    assert late == 1 and sorted(out) == [5.0, 10.0, 20.0, 21.0]
    assert out.index(5.0) < out.index(20.0)  # decided when it came, before 20 was due


def test_after_a_restart_the_decided_events_of_the_records_read_again_are_skipped() -> None:
    buf = Reorder(lateness=5.0)
    for t, off in [(10.0, 0), (12.0, 1), (30.0, 2)]:
        buf.push({"received_at": t}, off, 0)
    assert [r["received_at"] for r in buf.release(20.0)] == [10.0, 12.0]  # 30 buffered
    stored = {"next": 3, **buf.progress(3)}
    assert stored["from"] == 2  # read again from the record of the buffered event
    again = Reorder.resumed(5.0, stored)
    assert again.push({"received_at": 30.0}, 2, 0) == "buffered"  # not decided before
    assert again.push({"received_at": 31.0}, 3, 0) == "buffered"  # new
    assert again.push({"received_at": 11.0}, 4, 0) == "late"  # new, behind the decided
    old = Reorder.resumed(5.0, {"next": 3, "from": 0, "through": [12.0, 1, 0]})
    assert [old.push({"received_at": t}, o, 0) for t, o in [(10.0, 0), (12.0, 1), (30.0, 2)]] == [
        "done",
        "done",
        "buffered",
    ]


def test_nothing_buffered_stores_nothing() -> None:
    buf = Reorder(lateness=0.0)
    buf.push({"received_at": 1.0}, 0, 0)
    assert [r["received_at"] for r in buf.release(1.0)] == [1.0]
    assert buf.progress(1) == {} and buf.oldest_offset() is None
