"""Browser hits (SPEC §2.1): query and params forms, cd/ud keys, clocks, non-conversions."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from streams.settings import Settings
from tests.helpers import RECEIVED_AT, UA, codes_of, pixel_hit, run

DAY = 86_400


def test_query_and_params_forms_give_the_same_conversion() -> None:
    (a,) = run("browser", pixel_hit(as_query=True)).conversions
    (b,) = run("browser", pixel_hit(as_query=False)).conversions
    for k in ("emitted_at",):
        a.pop(k), b.pop(k)
    assert a == b
    assert a["action_source"] == "website"
    assert a["event_id"] == "order-1001"
    assert a["sources"] == ["browser"]
    assert a["custom_data"] == {"value": 49.9, "currency": "EUR"}
    assert a["user_data"]["client_ip_address"] == "203.0.113.7"
    assert a["user_data"]["client_user_agent"] == UA


def test_ts_in_ms_becomes_event_time_in_seconds() -> None:
    ts = int(RECEIVED_AT * 1000) - 5500
    (c,) = run("browser", pixel_hit({"ts": str(ts)})).conversions
    assert c["event_time"] == ts // 1000
    assert c["warnings"] == []


def test_lying_browser_clocks_use_received_at() -> None:
    for ts in (
        None,
        "not-a-number",
        str(int(RECEIVED_AT - 8 * 86400) * 1000),
        str(int(RECEIVED_AT + 61) * 1000),
    ):
        params = {} if ts is None else {"ts": ts}
        hit = pixel_hit(params)
        if ts is None:
            obj = orjson.loads(hit)
            obj["query"] = "&".join(p for p in obj["query"].split("&") if not p.startswith("ts="))
            hit = orjson.dumps(obj)
        (c,) = run("browser", hit).conversions
        assert c["event_time"] == int(RECEIVED_AT)
        assert c["warnings"] == ["client_clock_skew"]


def test_custom_and_user_data_keys() -> None:
    hit = pixel_hit(
        {
            "ev": "ViewContent",
            "cd[content_ids]": '["sku-1","sku-2"]',
            "cd[contents]": '[{"id":"sku-1","quantity":2}]',
            "cd[content_type]": "product",
            "ud[em]": "Ann@Example.org",
            "ud[ct]": "Menlo Park",
            "fbp": "fb.1.1795300000000.123",
            "fbc": "fb.1.1795390000000.AbC",
            "rl": "https://ref.example/",
        }
    )
    (c,) = run("browser", hit).conversions
    assert c["custom_data"]["content_ids"] == ["sku-1", "sku-2"]
    assert c["custom_data"]["contents"] == [{"id": "sku-1", "quantity": 2}]
    assert c["user_data"]["fbp"] == "fb.1.1795300000000.123"
    assert c["user_data"]["fbc"] == "fb.1.1795390000000.AbC"
    # the SHA-256 of the normalised values (SPEC §5), not just any 64-character string
    assert c["user_data"]["em"] == [hashlib.sha256(b"ann@example.org").hexdigest()]
    assert c["user_data"]["ct"] == [hashlib.sha256(b"menlopark").hexdigest()]
    assert c["referrer_url"] == "https://ref.example/"


def test_prehashed_browser_email_is_not_hashed_again() -> None:
    h = "62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F"
    (c,) = run("browser", pixel_hit({"ud[em]": h})).conversions
    assert c["user_data"]["em"] == [h.lower()]


def test_microdata_and_automatic_hits_are_counted_not_emitted() -> None:
    r = run(
        "browser", pixel_hit({"ev": "Microdata"}), pixel_hit({"ev": "PageView", "es": "automatic"})
    )
    assert r.conversions == [] and r.dead_letters == []
    assert r.tally["non_conversions", "browser", "microdata"] == 1
    assert r.tally["non_conversions", "browser", "automatic"] == 1


def test_invalid_contents_json_is_dead_lettered() -> None:
    r = run("browser", pixel_hit({"cd[contents]": "{not json"}))
    assert codes_of(r) == [["invalid_contents"]]


def test_hit_without_query_or_params_is_malformed() -> None:
    r = run("browser", orjson.dumps({"received_at": RECEIVED_AT}))
    assert codes_of(r) == [["malformed_message"]]
    r = run("browser", orjson.dumps({"received_at": RECEIVED_AT, "params": {"id": {"x": 1}}}))
    assert codes_of(r) == [["invalid_type"]]


def test_missing_user_agent_on_a_browser_hit() -> None:
    hit = orjson.loads(pixel_hit())
    del hit["user_agent"]
    r = run("browser", orjson.dumps(hit))
    assert codes_of(r) == [["missing_client_user_agent"]]


# --- Limited Data Use (SPEC §2.1: dpo, dpoco, dpost) ----------------------------------------


@pytest.mark.parametrize("as_query", [True, False])
def test_limited_data_use_is_carried_to_the_conversion(as_query: bool) -> None:
    params = {"dpo": "LDU", "dpoco": "1", "dpost": "1000"}
    (c,) = run("browser", pixel_hit(params, as_query=as_query)).conversions
    assert c["data_processing_options"] == ["LDU"]
    assert c["data_processing_options_country"] == 1
    assert c["data_processing_options_state"] == 1000


def test_limited_data_use_with_geolocation_keeps_the_zeros() -> None:
    # fbq('dataProcessingOptions', ['LDU'], 0, 0): Meta geolocates; 0 is a value, not "none"
    (c,) = run("browser", pixel_hit({"dpo": "LDU", "dpoco": "0", "dpost": "0"})).conversions
    assert c["data_processing_options"] == ["LDU"]
    assert c["data_processing_options_country"] == 0
    assert c["data_processing_options_state"] == 0


@pytest.mark.parametrize(
    ("dpo", "expected"),
    [("LDU", ["LDU"]), ("", []), (" LDU , ", ["LDU"]), ("LDU,OTHER", ["LDU", "OTHER"])],
)
def test_dpo_is_a_comma_separated_list(dpo: str, expected: list[str]) -> None:
    (c,) = run("browser", pixel_hit({"dpo": dpo})).conversions
    assert c["data_processing_options"] == expected
    assert "data_processing_options_country" not in c
    assert "data_processing_options_state" not in c


def test_a_hit_without_dpo_has_no_data_processing_options() -> None:
    (c,) = run("browser", pixel_hit()).conversions
    assert c["data_processing_options"] == []
    assert "data_processing_options_country" not in c


def test_blank_ldu_codes_count_as_not_given() -> None:
    (c,) = run("browser", pixel_hit({"dpo": "LDU", "dpoco": "", "dpost": " "})).conversions
    assert c["data_processing_options"] == ["LDU"]
    assert "data_processing_options_country" not in c
    assert "data_processing_options_state" not in c


@pytest.mark.parametrize(
    ("param", "value"),
    [("dpoco", "US"), ("dpost", "CA"), ("dpoco", "-1"), ("dpost", "1.5"), ("dpoco", "1" * 10)],
)
def test_non_integer_ldu_codes_are_dead_lettered_not_dropped(param: str, value: str) -> None:
    # sending the event without the code would restrict it less than the user asked for
    r = run("browser", pixel_hit({"dpo": "LDU", param: value}))
    assert r.conversions == []
    (dl,) = r.dead_letters
    assert [(e["code"], e["field"]) for e in dl["errors"]] == [("invalid_type", param)]
    assert dl["event"]["data_processing_options"] == ["LDU"]


# --- browser-side dead-letter codes (SPEC §3) ----------------------------------------------


def _without(param: str) -> bytes:
    hit = orjson.loads(pixel_hit())
    hit["query"] = "&".join(p for p in hit["query"].split("&") if not p.startswith(param + "="))
    return orjson.dumps(hit)


@pytest.mark.parametrize(("param", "field"), [("id", "id"), ("ev", "event_name")])
def test_missing_pixel_id_or_event_name(param: str, field: str) -> None:
    r = run("browser", _without(param))
    assert r.conversions == []
    (dl,) = r.dead_letters
    assert [(e["code"], e["field"]) for e in dl["errors"]] == [("missing_field", field)]


@pytest.mark.parametrize("pixel_id", ["12ab", "1" * 21, "-1", "\u0661\u0662"])
def test_invalid_browser_pixel_id(pixel_id: str) -> None:
    r = run("browser", pixel_hit({"id": pixel_id}))
    assert r.conversions == []
    (dl,) = r.dead_letters
    assert [(e["code"], e["field"]) for e in dl["errors"]] == [("invalid_pixel_id", "id")]
    assert dl["pixel_id"] is None


def test_browser_pixel_not_on_the_allow_list() -> None:
    allow = Settings(pixel_allowlist=frozenset({"111"}))
    r = run("browser", pixel_hit(), settings=allow)
    assert r.conversions == []
    (dl,) = r.dead_letters
    assert [(e["code"], e["field"]) for e in dl["errors"]] == [("unknown_pixel", "id")]
    assert len(run("browser", pixel_hit({"id": "111"}), settings=allow).conversions) == 1


# --- exact clock edges (SPEC §2.1: ts more than 7 days before / 60 s after received_at) ----


@pytest.mark.parametrize(
    ("offset_s", "skew"),
    [(60, False), (61, True), (-7 * DAY, False), (-7 * DAY - 1, True)],
)
def test_browser_clock_edges(offset_s: int, skew: bool) -> None:
    received_at = 1795400000.0  # whole seconds: the edges are exact
    ts = (int(received_at) + offset_s) * 1000
    (c,) = run("browser", pixel_hit({"ts": str(ts)}, received_at=received_at)).conversions
    expected: dict[str, Any] = {
        "event_time": int(received_at) if skew else ts // 1000,
        "warnings": ["client_clock_skew"] if skew else [],
    }
    assert {k: c[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("cd[content_ids]", "[1, 2]", ["1", "2"]),
        ("cd[content_ids]", "123", ["123"]),
        ("cd[content_ids]", '"sku-1"', ["sku-1"]),
        ("cd[content_ids]", "sku-1", ["sku-1"]),  # not JSON: a bare value
    ],
)
def test_browser_content_ids_are_strings(param: str, value: str, expected: list[str]) -> None:
    (c,) = run("browser", pixel_hit({param: value})).conversions
    assert c["custom_data"]["content_ids"] == expected


def test_browser_contents_ids_are_strings() -> None:
    (c,) = run("browser", pixel_hit({"cd[contents]": '[{"id": 5, "quantity": 1}]'})).conversions
    assert c["custom_data"]["contents"] == [{"id": "5", "quantity": 1}]
