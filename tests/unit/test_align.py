"""Merging input partitions in received_at order (streams/align.py)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.align import Aligner, received_at


def msg(t: float | None) -> bytes:
    return orjson.dumps({} if t is None else {"received_at": t})


parts = st.lists(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=12).map(sorted),
    min_size=1,
    max_size=4,
)


@settings(deadline=None)
@given(parts, st.integers(min_value=1, max_value=50))
def test_nothing_lagging_gives_every_record_in_time_order(
    times: list[list[float]], limit: int
) -> None:
    a = Aligner()
    for p, ts in enumerate(times):
        a.add(p, p % 2, p, enumerate(msg(t) for t in ts))
    out = []
    while batch := a.take(set(), limit):
        assert len(batch) <= limit
        out.extend(batch)
    got = [(received_at(item), p, off) for p, off, item in out]
    want = sorted(((t, p, off) for p, ts in enumerate(times) for off, t in enumerate(ts)),
                  key=lambda x: (x[0], x[1] % 2, x[1], x[2]))  # fmt: skip
    assert got == want


def test_a_lagging_partition_with_nothing_buffered_holds_the_others_back() -> None:
    a = Aligner()
    a.add("pixel", 0, 0, [(0, msg(10.0)), (1, msg(20.0))])
    assert a.take({"server"}, 10) == []  # the server backlog may hold earlier copies
    a.add("server", 1, 0, [(0, msg(15.0))])
    got = a.take({"server"}, 10)
    # pixel 10, server 15, then stop: the server partition is empty again and lags
    assert [(k, off) for k, off, _ in got] == [("pixel", 0), ("server", 0)]
    assert [(k, off) for k, off, _ in a.take(set(), 10)] == [("pixel", 1)]


def test_force_goes_on_without_the_lagging_partition() -> None:
    a = Aligner()
    a.add("pixel", 0, 0, [(0, msg(10.0))])
    assert [k for k, _, _ in a.take({"server"}, 10, force=True)] == ["pixel"]


def test_a_record_without_time_stays_where_it_stands_and_ties_go_to_pixel() -> None:
    a = Aligner()
    a.add("server", 1, 0, [(0, msg(5.0)), (1, b"not json"), (2, msg(9.0))])
    a.add("pixel", 0, 0, [(0, msg(5.0)), (1, msg(7.0))])
    got = [(k, off) for k, off, _ in a.take(set(), 10)]
    assert got == [("pixel", 0), ("server", 0), ("server", 1), ("pixel", 1), ("server", 2)]


def test_a_revoked_partition_is_forgotten() -> None:
    a = Aligner()
    a.add("p", 0, 0, [(0, msg(1.0))])
    a.drop("p")
    assert a.buffered("p") == 0 and a.take(set(), 10) == []
