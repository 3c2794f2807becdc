"""Bad input never stops the pipeline: whatever arrives, every message ends as
conversions, dead letters or a counted non-conversion, and nothing raises."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.model import Origin
from streams.pipeline import Pipeline, Result
from streams.settings import Settings
from tests.helpers import RECEIVED_AT, pixel_hit, server_event, server_message

PIPE = Pipeline(Settings(default_phone_country="US"))

weird_text = st.one_of(
    st.text(max_size=50),
    st.sampled_from(
        ["", " ", "\x00", "\ud7ff", "\u202e", "é" * 3, "😀", "a@b", "@", "+", "00", "1e309", "-0",
         "NaN", "Infinity", "\uff46\uff55\uff4c\uff4c", "İ", "ß", "x" * 100_000]
    ),
)  # fmt: skip
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), weird_text,
)  # fmt: skip
json_value = st.recursive(
    json_scalar,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(weird_text, kids, max_size=4)
    ),
    max_leaves=20,
)
EVENT_KEYS = [*server_event(), "opt_out", "data_processing_options", "referrer_url"]
UD_KEYS = ["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
           "client_ip_address", "client_user_agent", "fbc", "fbp", "lead_id", "madid",
           "x"]  # fmt: skip


@st.composite
def mutated_event(draw: st.DrawFn) -> Any:
    ev: dict[str, Any] = server_event()
    for key in draw(st.lists(st.sampled_from(EVENT_KEYS), max_size=4)):
        ev[key] = draw(json_value)
    if isinstance(ev.get("user_data"), dict):
        for key in draw(st.lists(st.sampled_from(UD_KEYS), max_size=5)):
            ev["user_data"][key] = draw(json_value)
    if draw(st.booleans()) and isinstance(ev.get("custom_data"), dict):
        ev["custom_data"][draw(st.sampled_from(["value", "currency", "contents"]))] = draw(
            json_value
        )
    return draw(st.one_of(st.just(ev), json_value)) if draw(st.integers(0, 9)) == 0 else ev


def deep(n: int) -> bytes:
    return b'{"received_at": 1, "data": ' + b"[" * n + b"]" * n + b"}"


def check_accounting(source: str, value: bytes) -> Result:
    out = Result()
    PIPE.process(source, value, Origin("t", 0, 0), RECEIVED_AT, out)  # type: ignore[arg-type]
    produced = len(out.conversions) + len(out.dead_letters)
    skipped = out.tally.sum_of("non_conversions")
    events = out.tally.sum_of("events_in")
    assert out.tally.sum_of("messages_in") == 1
    if events:
        # every parsed event became exactly one conversion or one dead letter
        assert produced == events and skipped == 0
    else:
        assert produced + skipped == 1, (produced, skipped)
    for rec in out.conversions + out.dead_letters:
        orjson.dumps(rec)  # every output is serializable
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(value: bytes) -> None:
    check_accounting("server", value)
    check_accounting("browser", value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_event(), min_size=1, max_size=5), json_value)
def test_server_messages_with_wrong_types(events: list[Any], tec: Any) -> None:
    msg = {"received_at": RECEIVED_AT, "pixel_id": "1234567890", "data": events}
    if tec is not None:
        msg["test_event_code"] = tec
    check_accounting("server", orjson.dumps(msg))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(weird_text, weird_text, max_size=8), json_value, json_value)
def test_pixel_hits_with_random_params(params: dict[str, str], ip: Any, ua: Any) -> None:
    base = orjson.loads(pixel_hit())
    for form in ("query", "params"):
        hit = dict(base, ip=ip, user_agent=ua)
        hit.pop("query")
        hit[form] = params if form == "params" else "&".join(f"{k}={v}" for k, v in params.items())
        check_accounting("browser", orjson.dumps(hit))


@settings(max_examples=100, deadline=None)
@given(json_value)
def test_any_json_value_as_a_message(value: Any) -> None:
    raw = orjson.dumps(value)
    check_accounting("server", raw)
    check_accounting("browser", raw)


def test_edge_cases() -> None:
    for value in (deep(5000), deep(100), b"\xff" * 10, b"{" * 10_000, b"", b"null", b"1e999"):
        check_accounting("server", value)
        check_accounting("browser", value)
    huge = server_message(
        server_event(user_data={"em": "a" * 2_000_000 + "@x.io", "client_user_agent": "u"})
    )
    check_accounting("server", huge)
    many = orjson.dumps(
        {"received_at": RECEIVED_AT, "query": "&".join(f"k{i}=v" for i in range(50_000))}
    )
    check_accounting("browser", many)
    check_accounting("server", server_message(server_event(), received_at=1e300))
    check_accounting("server", server_message(server_event(), received_at=-5))
