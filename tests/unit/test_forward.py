"""The pure part of ``convstream forward`` (streams/forward.py): bodies, batches, the
response classes of SPEC §11, the split plan, backoff, offsets, and its settings."""

from __future__ import annotations

import email.utils
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import forward as fwd
from streams.settings import Forward, SettingsError, from_env, to_env

ROOT = Path(__file__).resolve().parents[2]
CONVERSION: dict[str, Any] = json.loads((ROOT / "schemas/examples/conversion.json").read_text())
FW = Forward(retry_base=1.0, retry_max=30.0, throttle_wait=60.0, pause_probe=300.0)


def item(i: int, pixel: str = "1", tec: str | None = None, partition: int = 0) -> fwd.Item:
    return fwd.Item(partition, i, pixel, tec, {"event_name": "Purchase", "event_id": f"e{i}"})


def graph(code: int, subcode: int | None = None, message: str = "m") -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "fbtrace_id": "T"}
    if subcode is not None:
        err["error_subcode"] = subcode
    return orjson.dumps({"error": err})


# --- bodies -------------------------------------------------------------------------------


def test_capi_event_drops_convstream_fields_and_request_level_code() -> None:
    rec = dict(CONVERSION, test_event_code="TEST1")
    ev = fwd.capi_event(rec)
    assert not set(ev) & fwd.CONVSTREAM_ONLY
    assert "test_event_code" not in ev
    assert ev["event_id"] == "order-1001"
    assert ev["user_data"] == CONVERSION["user_data"]
    assert ev["custom_data"] == CONVERSION["custom_data"]


def test_event_id_defaults_to_conversion_id_and_nulls_are_left_out() -> None:
    rec = dict(CONVERSION, event_id=None, event_source_url=None)
    ev = fwd.capi_event(rec)
    assert ev["event_id"] == CONVERSION["conversion_id"]
    assert "event_source_url" not in ev


def test_request_body_carries_test_event_code_once_and_no_token() -> None:
    evs = [fwd.capi_event(CONVERSION)]
    assert fwd.request_body(evs, None) == {"data": evs}
    body = fwd.request_body(evs, "TEST9")
    assert body["test_event_code"] == "TEST9"
    wire = orjson.loads(fwd.encode_body(body, "sekrit"))
    assert wire["access_token"] == "sekrit" and wire["data"] == evs
    assert "access_token" not in body


def test_bodies_parse_as_sdk_events() -> None:
    """Meta's own SDK builds its Event objects from our events without complaint."""
    from facebook_business.adobjects.serverside.action_source import ActionSource
    from facebook_business.adobjects.serverside.event import Event

    ev = fwd.capi_event(CONVERSION)
    sdk = Event(
        event_name=ev["event_name"],
        event_time=ev["event_time"],
        event_id=ev["event_id"],
        action_source=ActionSource(ev["action_source"]),
        event_source_url=ev["event_source_url"],
        opt_out=ev["opt_out"],
        data_processing_options=ev["data_processing_options"],
    )
    normalized = sdk.normalize()
    for k in ("event_name", "event_time", "event_id", "action_source", "event_source_url"):
        assert normalized[k] == ev[k]
    assert set(ev) <= set(Event.param_types)


def test_decode_good_and_bad_records() -> None:
    ok = fwd.decode(orjson.dumps(CONVERSION), 3, 7)
    assert isinstance(ok, fwd.Item) and ok.key == ("1234567890", None)
    assert (ok.partition, ok.offset) == (3, 7)
    for raw, needle in (
        (b"{nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps(dict(CONVERSION, pixel_id="abc")), "pixel_id"),
        (orjson.dumps(dict(CONVERSION, event_time="soon")), "event_time"),
        (orjson.dumps({k: v for k, v in CONVERSION.items() if k != "user_data"}), "user_data"),
        (None, "not JSON"),
    ):
        bad = fwd.decode(raw, 0, 1)
        assert isinstance(bad, fwd.Bad) and needle in bad.message


@given(st.binary(max_size=300))
def test_decode_never_raises(raw: bytes) -> None:
    assert isinstance(fwd.decode(raw, 0, 0), fwd.Item | fwd.Bad)


# --- batches ------------------------------------------------------------------------------


def test_batcher_full_and_linger_per_pixel_and_test_code() -> None:
    b = fwd.Batcher(size=3, linger=1.0)
    assert b.add(item(0, "1"), 0.0) is None
    assert b.add(item(1, "2"), 0.1) is None
    assert b.add(item(2, "1", "T"), 0.2) is None
    assert b.add(item(3, "1"), 0.3) is None
    full = b.add(item(4, "1"), 0.4)
    assert full is not None and [i.offset for i in full.items] == [0, 3, 4]
    assert len(b) == 2 and b.due(1.05) == [] and b.next_due() == 0.1
    due = b.due(1.15)
    assert [(x.pixel_id, x.test_event_code) for x in due] == [("2", None)]
    assert [x.test_event_code for x in b.drain()] == ["T"]


def test_chunks_never_exceed_1000() -> None:
    batches = fwd.chunks([item(i) for i in range(2500)])
    assert [len(x.items) for x in batches] == [1000, 1000, 500]
    with pytest.raises(ValueError):
        fwd.Batcher(size=1001)


def test_drop_partitions() -> None:
    b = fwd.Batcher(size=10, linger=1)
    b.add(item(0, partition=0), 0)
    b.add(item(1, partition=1), 0)
    b.drop_partitions({1})
    assert [i.partition for x in b.drain() for i in x.items] == [0]


# --- classification -----------------------------------------------------------------------

CLASSES = [
    # status, retry-after, body, kind, reason, code
    (200, None, b'{"events_received":1}', "ok", "ok", None),
    (500, None, b"oops", "retry", "http_5xx", None),
    (502, None, b"", "retry", "http_5xx", None),
    (500, None, graph(1), "retry", "graph_transient", 1),
    (503, None, graph(2), "retry", "graph_transient", 2),
    (400, None, graph(341), "retry", "graph_transient", 341),
    (400, None, graph(4), "throttle", "throttled", 4),
    (400, None, graph(17), "throttle", "throttled", 17),
    (400, None, graph(32), "throttle", "throttled", 32),
    (400, "7", graph(613), "throttle", "throttled", 613),
    (400, None, graph(80003), "throttle", "throttled", 80003),
    (400, None, graph(80004), "throttle", "throttled", 80004),
    (429, "3", b"slow down", "throttle", "throttled", None),
    (429, None, graph(100), "throttle", "throttled", 100),
    (400, None, graph(100, 2804003), "reject", "rejected", 100),
    (403, None, graph(200), "reject", "rejected", 200),
    (413, None, b"too big", "reject", "rejected", None),
    (400, None, graph(190, 463), "auth", "paused", 190),
    (401, None, graph(190), "auth", "paused", 190),
    (404, None, b"<html>not found</html>", "retry", "not_graph_error", None),
    (500, None, graph(100), "retry", "http_5xx", 100),
]


@pytest.mark.parametrize(("status", "ra", "body", "kind", "reason", "code"), CLASSES)
def test_classification_table(
    status: int, ra: str | None, body: bytes, kind: str, reason: str, code: int | None
) -> None:
    o = fwd.classify(status, ra, body, now=1000.0)
    assert (o.kind, o.reason, o.code, o.status) == (kind, reason, code, status)
    assert reason in (*fwd.RETRY_REASONS, "ok", "rejected")
    if ra is not None:
        assert o.retry_after == float(ra)


def test_classify_keeps_subcode_message_trace_and_redacts_tokens() -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": 100,
                "error_subcode": 2804003,
                "message": "bad token EAAsecret in text",
                "error_user_msg": "event too old",
                "fbtrace_id": "Axyz",
            }
        }
    )
    o = fwd.classify(400, None, body, 0.0, secrets=("EAAsecret",))
    assert (o.code, o.subcode, o.fbtrace_id) == (100, 2804003, "Axyz")
    assert o.message == "bad token [redacted] in text (event too old)"


def test_transport_failures_retry() -> None:
    assert fwd.transport_failure("timeout") == fwd.Outcome("retry", "timeout")
    assert fwd.transport_failure("transport").kind == "retry"


def test_retry_after_seconds_and_http_date() -> None:
    assert fwd.parse_retry_after("12", 0.0) == 12.0
    assert fwd.parse_retry_after(" 0.5 ", 0.0) == 0.5
    assert fwd.parse_retry_after(None, 0.0) is None
    assert fwd.parse_retry_after("soon", 0.0) is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert fwd.parse_retry_after(date, 1_000_000.0) == pytest.approx(30.0)
    assert fwd.parse_retry_after(date, 2_000_000.0) == 0.0


# --- plan ---------------------------------------------------------------------------------


def test_plan_per_class() -> None:
    r = random.Random(1).random
    assert fwd.plan(fwd.Outcome("ok", "ok"), 5, 0, FW, r).action == "done"
    assert fwd.plan(fwd.Outcome("reject", "rejected"), 5, 0, FW, r).action == "split"
    one = fwd.plan(fwd.Outcome("reject", "rejected"), 1, 0, FW, r)
    assert (one.action, one.reason) == ("dead_letter", "rejected")
    thr = fwd.plan(fwd.Outcome("throttle", "throttled", retry_after=7.0), 5, 3, FW, r)
    assert (thr.action, thr.delay, thr.pixel_wide) == ("wait", 7.0, True)
    thr2 = fwd.plan(fwd.Outcome("throttle", "throttled"), 5, 0, FW, r)
    assert 60.0 <= thr2.delay <= 90.0 and thr2.pixel_wide
    auth = fwd.plan(fwd.Outcome("auth", "paused"), 5, 0, FW, r)
    assert (auth.action, auth.delay, auth.pixel_wide, auth.reason) == (
        "wait",
        300.0,
        True,
        "paused",
    )
    retry = fwd.plan(fwd.Outcome("retry", "http_5xx"), 5, 2, FW, r)
    assert retry.action == "wait" and not retry.pixel_wide and 2.0 <= retry.delay <= 4.0
    assert retry.reason == "http_5xx"


def test_a_retry_honours_retry_after_as_a_floor() -> None:
    r = random.Random(1).random
    o = fwd.classify(503, "9", b"busy", 0.0)
    assert (o.kind, o.retry_after) == ("retry", 9.0)
    assert fwd.plan(o, 10, 0, FW, r).delay == 9.0
    assert fwd.plan(fwd.classify(503, None, b"busy", 0.0), 10, 0, FW, r).delay <= 1.0


def test_retries_are_unlimited_by_default_and_bounded_when_set() -> None:
    r = random.Random(1).random
    o = fwd.Outcome("retry", "timeout")
    assert fwd.plan(o, 1, 10_000, FW, r).action == "wait"
    limited = Forward(max_attempts=3)
    assert fwd.plan(o, 1, 1, limited, r).action == "wait"
    assert fwd.plan(o, 1, 2, limited, r) == fwd.Step("dead_letter", reason="retries_exhausted")


@given(st.integers(0, 200), st.floats(0, 0.999999))
def test_backoff_grows_jittered_and_capped(attempt: int, u: float) -> None:
    d = fwd.backoff(attempt, 0.5, 60.0, lambda: u)
    ceiling = min(60.0, 0.5 * 2**attempt)
    assert ceiling / 2 <= d <= ceiling


def simulate(n: int, bad: set[int]) -> tuple[list[int], list[int], int]:
    """A batch of n events through plan/split against a 'Meta' that rejects any batch
    holding a bad event: (sent, dead-lettered, requests)."""
    sent: list[int] = []
    dead: list[int] = []
    requests = 0
    work = [[item(i) for i in range(n)]]
    while work:
        items = work.pop()
        requests += 1
        rejected = any(i.offset in bad for i in items)
        outcome = (
            fwd.Outcome("reject", "rejected", 400, 100) if rejected else fwd.Outcome("ok", "ok")
        )
        step = fwd.plan(outcome, len(items), 0, FW, random.random)
        if step.action == "done":
            sent += [i.offset for i in items]
        elif step.action == "split":
            left, right = fwd.split(items)
            assert left and right and left + right == items
            work += [right, left]
        else:
            dead += [i.offset for i in items]
    return sent, dead, requests


@given(st.integers(1, 1000), st.sets(st.integers(0, 999), max_size=5))
def test_split_isolates_exactly_the_bad_events(n: int, bad_all: set[int]) -> None:
    bad = {b for b in bad_all if b < n}
    sent, dead, requests = simulate(n, bad)
    assert sorted(dead) == sorted(bad)
    assert sorted(sent) == sorted(set(range(n)) - bad)
    if len(bad) == 1:
        assert requests <= 2 * 10 + 1  # bisection: ~2 log2(n) requests for one bad event


# --- dead letters and offsets -------------------------------------------------------------


def test_dead_letter_of_a_rejected_event_and_of_a_bad_record() -> None:
    it = fwd.decode(orjson.dumps(CONVERSION), 2, 9)
    assert isinstance(it, fwd.Item)
    o = fwd.classify(400, None, graph(100, 2804003, "too old"), 0.0)
    dl = fwd.dead_letter("conversions.enriched", it, "rejected", o, 3, 10.0)
    assert (dl["code"], dl["subcode"], dl["message"], dl["attempts"]) == (
        100,
        2804003,
        "too old",
        3,
    )
    assert dl["event"] == it.event and dl["event_id"] == "order-1001"
    assert fwd.dead_letter_key(it) == b"2:9"
    bad = fwd.decode(b'{"pixel_id": "42", "em": "raw@example.org"}', 1, 4)
    dl2 = fwd.dead_letter("conversions.enriched", bad, "invalid_record", None, 0, 10.0)
    assert dl2["event"] is None and dl2["pixel_id"] == "42"
    assert "raw@example.org" not in orjson.dumps(dl2).decode()


def test_offset_tracker_commits_only_behind_settled_runs() -> None:
    t = fwd.OffsetTracker()
    for off in (10, 11, 12, 13):
        t.add(0, off)
    t.add(1, 5)
    assert t.pending() == 5 and t.committable() == {}
    t.settle(0, 11)
    t.settle(0, 12)
    assert t.committable() == {}  # 10 is not settled: nothing behind it moves
    t.settle(0, 10)
    t.settle(1, 5)
    assert t.committable() == {0: 13, 1: 6}
    assert t.committable() == {}
    assert t.pending() == 1
    t.forget([0])
    t.settle(0, 13)  # a late settle of a revoked partition is ignored
    assert t.committable() == {} and t.pending() == 0


@given(st.permutations(list(range(30))))
def test_offset_tracker_any_settle_order(order: list[int]) -> None:
    t = fwd.OffsetTracker()
    for off in range(30):
        t.add(0, off)
    highest = 0
    for off in order:
        t.settle(0, off)
        got = t.committable().get(0)
        if got is not None:
            assert got > highest
            highest = got
            assert all(o in order[: order.index(off) + 1] for o in range(got))
    assert highest == 30


# --- settings -----------------------------------------------------------------------------


def test_forward_settings_from_env_and_back(tmp_path: Path) -> None:
    s = from_env(
        {
            "CONVSTREAM_META_GRAPH_URL": "http://127.0.0.1:9/",
            "CONVSTREAM_META_API_VERSION": "v23.0",
            "CONVSTREAM_META_ACCESS_TOKENS": "222=tokB, 111=tokA",
            "CONVSTREAM_FORWARD_LINGER": "0.2",
            "CONVSTREAM_FORWARD_MAX_ATTEMPTS": "5",
            "CONVSTREAM_TOPIC_FORWARD_DEAD_LETTER": "my.fdl",
        }
    )
    fw = s.forward
    assert fw.graph_url == "http://127.0.0.1:9" and fw.api_version == "v23.0"
    assert fw.pixels == ("111", "222") and fw.token("111") == "tokA"
    assert fw.linger == 0.2 and fw.max_attempts == 5
    assert s.topics.forward_dead_letter == "my.fdl"
    assert "tokA" not in repr(s) and "tokB" not in repr(s)
    assert from_env(to_env(s)) == s
    f = tmp_path / "tokens"
    f.write_text("# pixel=token\n111=tokA\n\n222=tokB\n")
    s2 = from_env({"CONVSTREAM_META_ACCESS_TOKENS_FILE": str(f)})
    assert s2.forward.access_tokens == fw.access_tokens


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONVSTREAM_META_ACCESS_TOKENS": "111"}, "item 1"),
        ({"CONVSTREAM_META_ACCESS_TOKENS": "abc=SECRETq"}, "item 1"),
        ({"CONVSTREAM_META_ACCESS_TOKENS": "111=SECRETa,111=SECRETb"}, "pixel 111 is given twice"),
        ({"CONVSTREAM_META_ACCESS_TOKENS": "111="}, "token of pixel 111"),
        ({"CONVSTREAM_META_ACCESS_TOKENS_FILE": "/nonexistent/tokens"}, "cannot read"),
        (
            {
                "CONVSTREAM_META_ACCESS_TOKENS": "1=SECRETc",
                "CONVSTREAM_META_ACCESS_TOKENS_FILE": "/x",
            },
            "not both",
        ),
        ({"CONVSTREAM_META_API_VERSION": "24"}, "CONVSTREAM_META_API_VERSION"),
        ({"CONVSTREAM_META_GRAPH_URL": "ftp://x"}, "CONVSTREAM_META_GRAPH_URL"),
        ({"CONVSTREAM_FORWARD_BATCH_SIZE": "1001"}, "CONVSTREAM_FORWARD_BATCH_SIZE"),
        ({"CONVSTREAM_FORWARD_CONCURRENCY": "0"}, "CONVSTREAM_FORWARD_CONCURRENCY"),
        (
            {"CONVSTREAM_FORWARD_RETRY_BASE": "10", "CONVSTREAM_FORWARD_RETRY_MAX": "1"},
            "RETRY_MAX",
        ),
    ],
)
def test_bad_forward_settings_name_the_variable_never_the_token(
    env: dict[str, str], needle: str
) -> None:
    with pytest.raises(SettingsError) as e:
        from_env(env)
    assert needle in str(e.value)
    assert "SECRET" not in str(e.value)


def test_uncommitted_counts_settled_records_behind_an_unsettled_one() -> None:
    t = fwd.OffsetTracker()
    for off in range(5):
        t.add(0, off)
    for off in (1, 2, 3):
        t.settle(0, off)
    assert t.committable() == {}
    assert (t.pending(), t.uncommitted()) == (2, 5)
    t.settle(0, 0)
    assert t.committable() == {0: 4} and t.uncommitted() == 1


def test_every_forward_setting_is_documented_in_the_readme() -> None:
    from streams.settings import ENV_VARS

    readme = (ROOT / "README.md").read_text()
    names = [n for n in ENV_VARS if n.startswith(("CONVSTREAM_META_", "CONVSTREAM_FORWARD_"))]
    assert len(names) == 14
    missing = [
        n
        for n in names
        if f"`{n}`" not in readme
        and f"`{n.replace('RETRY_MAX', 'RETRY_BASE')}` / `_RETRY_MAX`" not in readme
    ]
    assert not missing
    assert "`CONVSTREAM_TOPIC_FORWARD_DEAD_LETTER`" in readme


def test_the_pure_module_imports_no_kafka_or_http_client() -> None:
    import ast

    tree = ast.parse((ROOT / "streams" / "forward.py").read_text())
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m.split(".")[0] for m in imported} & {"faust", "aiokafka", "aiohttp", "mode"}
