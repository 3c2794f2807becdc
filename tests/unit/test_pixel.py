"""Browser hits (SPEC §2.1): query and params forms, cd/ud keys, clocks, non-conversions."""

from __future__ import annotations

import orjson

from tests.helpers import RECEIVED_AT, UA, codes_of, pixel_hit, run


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
    assert len(c["user_data"]["em"][0]) == 64 and len(c["user_data"]["ct"][0]) == 64
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
