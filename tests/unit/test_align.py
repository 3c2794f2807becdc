"""Merging input partitions in received_at order (streams/align.py)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.align import Aligner, received_at
from streams.capi import NOT_DECODED
from streams.model import Origin
from streams.pipeline import Pipeline, Result
from streams.settings import Settings


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
    got = [(received_at(item), p, off) for p, off, item, _ in out]
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
    assert [(k, off) for k, off, _, _ in got] == [("pixel", 0), ("server", 0)]
    assert [(k, off) for k, off, _, _ in a.take(set(), 10)] == [("pixel", 1)]


def test_force_goes_on_without_the_lagging_partition() -> None:
    a = Aligner()
    a.add("pixel", 0, 0, [(0, msg(10.0))])
    assert [k for k, _, _, _ in a.take({"server"}, 10, force=True)] == ["pixel"]


def test_a_record_without_time_stays_where_it_stands_and_ties_go_to_pixel() -> None:
    a = Aligner()
    a.add("server", 1, 0, [(0, msg(5.0)), (1, b"not json"), (2, msg(9.0))])
    a.add("pixel", 0, 0, [(0, msg(5.0)), (1, msg(7.0))])
    got = [(k, off) for k, off, _, _ in a.take(set(), 10)]
    assert got == [("pixel", 0), ("server", 0), ("server", 1), ("pixel", 1), ("server", 2)]


def test_a_revoked_partition_is_forgotten() -> None:
    a = Aligner()
    a.add("p", 0, 0, [(0, msg(1.0))])
    a.drop("p")
    assert a.buffered("p") == 0 and a.take(set(), 10) == []


def test_take_hands_on_the_value_decoded_once_and_the_pipeline_gives_the_same() -> None:
    """The aligner decodes each value (for received_at); the pipeline takes that object
    instead of decoding again, with the same results, errors included."""
    body = {
        "received_at": 1795400000.0,
        "pixel_id": "1234567890",
        "data": [
            {
                "event_name": "Purchase",
                "event_time": 1795399990,
                "event_id": "order-1",
                "action_source": "website",
                "event_source_url": "https://shop.example/thanks",
                "user_data": {"em": "buyer@example.org", "client_user_agent": "Mozilla/5.0"},
                "custom_data": {"value": 10, "currency": "EUR"},
            }
        ],
    }
    values = [orjson.dumps(body), b"not json", b"[1, 2]", b'{"no": "received_at"}', msg(11.0)]
    a = Aligner()
    a.add("p", 0, 0, enumerate(values))
    taken = a.take(set(), 10)
    assert [d for _, _, _, d in taken] == [
        body,
        NOT_DECODED,
        [1, 2],
        {"no": "received_at"},
        orjson.loads(msg(11.0)),
    ]
    pipeline = Pipeline(Settings())
    once, twice = Result(), Result()
    for _, off, item, decoded in taken:
        pipeline.process("server", item, Origin("t", 0, off), 1795400001.0, once, decoded)
        pipeline.process("server", item, Origin("t", 0, off), 1795400001.0, twice)
    assert once == twice
    assert len(once.conversions) == 1 and len(once.dead_letters) == 4
