"""Groups of events in one internal record (streams/groups.py)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import groups

events = st.lists(
    st.dictionaries(st.sampled_from("abcde"), st.text(max_size=40), min_size=1), max_size=60
)


@settings(deadline=None)
@given(events, st.integers(min_value=2, max_value=400))
def test_groups_keep_every_event_in_order_and_stay_under_the_limit(
    evs: list[dict[str, str]], limit: int
) -> None:
    values = [orjson.dumps(e) for e in evs]
    out = list(groups.encode(values, limit))
    decoded = [e for g in out for e in groups.decode(g)]
    assert decoded == evs
    for g in out:
        # over the limit only when one event alone is larger
        assert len(g) <= limit or len(groups.decode(g)) == 1


def test_a_single_event_record_from_before_groups_is_read_as_one_event() -> None:
    assert groups.decode(b'{"a":1}') == [{"a": 1}]


def test_anything_else_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="neither a group nor an event: int"):
        groups.decode(b"7")


def test_by_partition_groups_per_partition_in_order() -> None:
    items = [(1, b'{"i":0}'), (0, b'{"i":1}'), (1, b'{"i":2}')]
    records, parts = groups.by_partition(items, "t", limit=1000)
    assert parts == [1, 0]
    assert [groups.decode(v or b"") for _, _, v in records] == [[{"i": 0}, {"i": 2}], [{"i": 1}]]
    assert {t for t, _, _ in records} == {"t"}


@settings(deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"conversion_id": st.text("0123456789abcdef", min_size=64, max_size=64)},
            optional={"n": st.integers(min_value=-(2**63), max_value=2**63 - 1)},
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=40, max_value=400),
)
def test_grouped_is_by_partition_of_the_serialized_events(
    events: list[dict[str, object]], partitions: int, limit: int
) -> None:
    def key(ev: dict[str, object]) -> bytes:
        return str(ev["conversion_id"]).encode()

    want = groups.by_partition(
        ((groups.partition_for(key(ev), partitions), orjson.dumps(ev)) for ev in events),
        "t",
        limit,
    )
    assert groups.grouped(events, key, partitions, "t", limit) == want
    decoded = [e for _, _, v in want[0] for e in groups.decode(v or b"")]
    assert sorted(decoded, key=orjson.dumps) == sorted(events, key=orjson.dumps)
