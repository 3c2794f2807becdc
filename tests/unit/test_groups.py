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


def test_a_group_of_an_older_version_one_json_array_is_read() -> None:
    assert groups.decode(b'[{"a":1},{"b":2}]') == [{"a": 1}, {"b": 2}]
    assert groups.decode_lines(b'[{"a":1}]') == [({"a": 1}, None)]


def test_each_event_of_a_group_of_lines_keeps_its_own_bytes() -> None:
    (group,) = groups.encode([b'{"a":1}', b'{"b":"x\\ny"}'])
    assert group == b'{"a":1}\n{"b":"x\\ny"}'  # orjson escapes a newline in a string
    assert groups.decode_lines(group) == [({"a": 1}, b'{"a":1}'), ({"b": "x\ny"}, b'{"b":"x\\ny"}')]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"7", "holds a int, not an event"),
        (b'{"a":1}\n[1]', "holds a list, not an event"),
        (b'[{"a":1},3]', "array holds something else than events"),
    ],
)
def test_anything_else_is_refused_by_name(value: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        groups.decode(value)


def test_splice_gives_the_bytes_of_the_decided_conversion() -> None:
    """Ingest's conversions of mixed traffic, decided by the dedup rules: the spliced
    bytes are what serializing the decided record gives, for every kept conversion."""
    from bench.traffic import mixed
    from streams.dedupe import Deduper, DedupStage
    from streams.model import Origin
    from streams.pipeline import Pipeline, Result
    from streams.settings import Settings
    from streams.tally import Tally

    result = Result()
    pipeline = Pipeline(Settings())
    for i, (source, value) in enumerate(mixed(600)):
        pipeline.process(source, value, Origin("raw", 0, i), 1.8e9, result)  # type: ignore[arg-type]
    for rec in result.conversions[::7]:  # id-less copies too: kept with no method
        rec["event_id"] = None
    raws = [orjson.dumps(rec) for rec in result.conversions]
    recs = [orjson.loads(raw) for raw in raws]
    emitted: list[dict[str, object]] = []
    DedupStage(Deduper({}, {})).run(recs, Tally(), emitted)
    kept = {id(rec): raw for rec, raw in zip(recs, raws, strict=True)}
    methods = set()
    assert 100 < len(emitted) < len(recs)  # some were duplicates
    for rec in emitted:
        dedup = rec["dedup"]
        assert isinstance(dedup, dict)
        methods.add(dedup["method"])
        assert groups.splice_dedup(kept[id(rec)], dedup) == orjson.dumps(rec)
    assert methods == {"event_id", None}


def test_splice_finds_the_conversions_own_dedup_after_a_lookalike_in_custom_data() -> None:
    rec = {
        "custom_data": {"dedup": {"method": None, "duplicates": 0}, "match_quality": 1},
        "dedup": {"method": None, "duplicates": 0},
        "match_quality": {"score": 3},
        "received_at": 1.5,
    }
    raw = orjson.dumps(rec)
    rec["dedup"] = {"method": "event_id", "duplicates": 0}
    assert groups.splice_dedup(raw, rec["dedup"]) == orjson.dumps(rec)


def test_splice_declines_a_record_without_an_undecided_dedup() -> None:
    assert groups.splice_dedup(b'{"dedup":{"method":"fbp","duplicates":0}}', {"m": 1}) is None


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
