"""SPEC §3, one rule at a time, through the real pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from streams.settings import Settings
from tests.helpers import (
    DELETE,
    RECEIVED_AT,
    UA,
    codes_of,
    run,
    server_event,
    server_message,
)

DAY = 86_400


def only_error(ev: dict[str, Any], **msg: Any) -> list[str]:
    r = run("server", server_message(ev, **msg))
    assert r.conversions == [], "expected the event to be rejected"
    assert len(r.dead_letters) == 1
    return codes_of(r)[0]


def test_valid_purchase_becomes_a_conversion() -> None:
    r = run("server", server_message(server_event()))
    assert r.dead_letters == []
    (c,) = r.conversions
    assert c["custom_data"] == {"value": 49.9, "currency": "EUR"}
    assert c["user_data"]["em"] == [
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    ]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"event_name": DELETE}, "missing_field", "event_name"),
        ({"event_time": DELETE}, "missing_field", "event_time"),
        ({"action_source": DELETE}, "missing_field", "action_source"),
        ({"user_data": DELETE}, "missing_field", "user_data"),
        ({"event_name": 7}, "invalid_type", "event_name"),
        ({"event_time": "yesterday"}, "invalid_type", "event_time"),
        ({"user_data": ["em"]}, "invalid_type", "user_data"),
        ({"custom_data": "cheap"}, "invalid_type", "custom_data"),
        ({"opt_out": "no"}, "invalid_type", "opt_out"),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": "1"},
            "invalid_type",
            "data_processing_options_country",
        ),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_state": True},
            "invalid_type",
            "data_processing_options_state",
        ),
        ({"data_processing_options": "LDU"}, "invalid_type", "data_processing_options"),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "content_ids": [True]}},
            "invalid_type",
            "custom_data.content_ids",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "content_ids": [None]}},
            "invalid_type",
            "custom_data.content_ids",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "content_ids": {"id": "a"}}},
            "invalid_type",
            "custom_data.content_ids",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "contents": [{"id": True}]}},
            "invalid_contents",
            "custom_data.contents",
        ),
        ({"action_source": "carrier_pigeon"}, "invalid_action_source", "action_source"),
        ({"event_time": int(RECEIVED_AT) - 7 * DAY - 1}, "event_time_too_old", "event_time"),
        ({"event_time": int(RECEIVED_AT) + 61}, "event_time_in_future", "event_time"),
        ({"event_source_url": DELETE}, "missing_event_source_url", "event_source_url"),
        (
            {"user_data": {"em": "a@b.co"}},
            "missing_client_user_agent",
            "user_data.client_user_agent",
        ),
        ({"custom_data": {"currency": "EUR"}}, "missing_value", "custom_data.value"),
        ({"custom_data": {"value": 1}}, "missing_currency", "custom_data.currency"),
        ({"custom_data": {"value": -1, "currency": "EUR"}}, "invalid_value", "custom_data.value"),
        (
            {"custom_data": {"value": "1e999", "currency": "EUR"}},
            "invalid_value",
            "custom_data.value",
        ),
        (
            {"custom_data": {"value": "ten", "currency": "EUR"}},
            "invalid_value",
            "custom_data.value",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EURO"}},
            "invalid_currency",
            "custom_data.currency",
        ),
        (
            {"custom_data": {"value": 1, "currency": "XXY"}},
            "invalid_currency",
            "custom_data.currency",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "contents": [{"quantity": 1}]}},
            "invalid_contents",
            "custom_data.contents",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "contents": "sku-1"}},
            "invalid_contents",
            "custom_data.contents",
        ),
        (
            {"user_data": {"client_user_agent": UA}},
            "insufficient_customer_information",
            "user_data",
        ),
        (
            {"user_data": {"ct": "Paris", "country": "FR", "zp": "75001", "client_user_agent": UA}},
            "insufficient_customer_information",
            "user_data",
        ),
    ],
)
def test_each_rule_has_its_code(change: dict[str, Any], code: str, field: str) -> None:
    r = run("server", server_message(server_event(**change)))
    assert r.conversions == []
    (dl,) = r.dead_letters
    found = [(e["code"], e["field"]) for e in dl["errors"]]
    if field == "user_data" and code in ("missing_field", "invalid_type"):
        # a website event without usable user_data also lacks its client_user_agent
        assert found == [
            (code, field),
            ("missing_client_user_agent", "user_data.client_user_agent"),
        ]
    else:
        assert found == [(code, field)]


def test_keys_outside_the_weak_sets_are_enough() -> None:
    # {fn, ge, client_user_agent} is not inside any one weak set
    ev = server_event(user_data={"fn": "Ann", "ge": "f", "client_user_agent": UA})
    r = run("server", server_message(ev))
    assert r.dead_letters == [] and len(r.conversions) == 1


def test_pixel_id_rules() -> None:
    assert only_error(server_event(), pixel_id=None) == ["missing_field"]
    assert only_error(server_event(), pixel_id="12ab") == ["invalid_pixel_id"]
    assert only_error(server_event(), pixel_id="1" * 21) == ["invalid_pixel_id"]
    assert only_error(server_event(), pixel_id=["1"]) == ["invalid_type"]
    # a JSON integer pixel id is accepted and emitted as a string
    (c,) = run("server", server_message(server_event(), pixel_id=1234567890)).conversions
    assert c["pixel_id"] == "1234567890"


def test_unknown_pixel_with_allow_list() -> None:
    s = Settings(pixel_allowlist=frozenset({"111"}))
    r = run("server", server_message(server_event()), settings=s)
    assert codes_of(r) == [["unknown_pixel"]]
    r = run("server", server_message(server_event(), pixel_id="111"), settings=s)
    assert len(r.conversions) == 1


def test_all_errors_of_an_event_are_reported_at_once() -> None:
    ev = server_event(
        action_source="nowhere", custom_data={"value": "x", "currency": "??"}, event_time="t"
    )
    assert sorted(only_error(ev)) == sorted(
        ["invalid_action_source", "invalid_type", "invalid_value", "invalid_currency"]
    )


def test_physical_store_may_be_62_days_old() -> None:
    ev = server_event(
        action_source="physical_store",
        event_time=int(RECEIVED_AT) - 60 * DAY,
        event_source_url=DELETE,
    )
    assert len(run("server", server_message(ev)).conversions) == 1
    ev["event_time"] = int(RECEIVED_AT) - 63 * DAY
    assert only_error(ev) == ["event_time_too_old"]


def test_event_time_in_ms_is_converted_with_a_warning() -> None:
    ev = server_event(event_time=(int(RECEIVED_AT) - 10) * 1000)
    (c,) = run("server", server_message(ev)).conversions
    assert c["event_time"] == int(RECEIVED_AT) - 10
    assert "event_time_in_ms" in c["warnings"]


def test_reference_time_is_received_at_not_the_clock() -> None:
    # an event from 2026 is judged against its own received_at, whatever the clock says
    msg = server_message(server_event(), received_at=RECEIVED_AT)
    assert len(run("server", msg, now=RECEIVED_AT + 365 * DAY).conversions) == 1


def test_numeric_string_value_is_converted() -> None:
    (c,) = run(
        "server", server_message(server_event(custom_data={"value": "19.99", "currency": "usd"}))
    ).conversions
    assert c["custom_data"] == {"value": 19.99, "currency": "USD"}


def test_unnormalizable_value_is_dropped_with_a_warning_not_rejected() -> None:
    ev = server_event(
        user_data={"em": "not-an-email", "ph": "+1 650 555 1212", "client_user_agent": UA}
    )
    (c,) = run("server", server_message(ev)).conversions
    assert "em" not in c["user_data"]
    assert "dropped_em" in c["warnings"]


def test_batch_limits_and_independence() -> None:
    too_many = server_message(*[server_event(event_id=f"e{i}") for i in range(1001)])
    r = run("server", too_many)
    assert codes_of(r) == [["batch_too_large"]] and r.conversions == []
    exactly = server_message(*[server_event(event_id=f"e{i}") for i in range(1000)])
    assert len(run("server", exactly).conversions) == 1000
    # one bad event is dead-lettered; the rest of the batch goes on
    mixed = server_message(
        server_event(event_id="a"), server_event(event_name=DELETE), server_event(event_id="c")
    )
    r = run("server", mixed)
    assert [c["event_id"] for c in r.conversions] == ["a", "c"]
    assert r.dead_letters[0]["event_index"] == 1


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[]",
        b"123",
        b'"s"',
        b"{}",
        b'{"received_at": "today"}',
        b'{"received_at": true}',
    ],
)
def test_malformed_messages(value: bytes) -> None:
    r = run("server", value)
    assert codes_of(r) == [["malformed_message"]]
    assert r.dead_letters[0]["event"] is None


def test_server_limited_data_use_is_kept() -> None:
    ev = server_event(
        data_processing_options=["LDU"],
        data_processing_options_country=0,
        data_processing_options_state=0,
    )
    (c,) = run("server", server_message(ev)).conversions
    assert c["data_processing_options"] == ["LDU"]
    assert (c["data_processing_options_country"], c["data_processing_options_state"]) == (0, 0)


@pytest.mark.parametrize(
    ("content_ids", "expected"),
    [
        (["sku-1", "sku-2"], ["sku-1", "sku-2"]),
        ([123, "sku-1", 7.0, 1.5], ["123", "sku-1", "7", "1.5"]),
        ("sku-1", ["sku-1"]),
        (42, ["42"]),
        ([], []),
    ],
)
def test_content_ids_are_always_a_list_of_strings(content_ids: Any, expected: list[str]) -> None:
    cd = {"value": 1, "currency": "EUR", "content_ids": content_ids}
    (c,) = run("server", server_message(server_event(custom_data=cd))).conversions
    assert c["custom_data"]["content_ids"] == expected


def test_contents_ids_are_strings_other_fields_kept() -> None:
    contents = [{"id": 7, "quantity": 2, "item_price": 9.5}, {"id": "sku-2"}, {"id": 8.0}]
    cd = {"value": 1, "currency": "EUR", "contents": contents}
    (c,) = run("server", server_message(server_event(custom_data=cd))).conversions
    assert c["custom_data"]["contents"] == [
        {"id": "7", "quantity": 2, "item_price": 9.5},
        {"id": "sku-2"},
        {"id": "8"},
    ]


# --- exact time edges (SPEC §3): 60 s ahead, 7 days back, 62 days for physical_store ------

EXACT = 1795400000.0  # a received_at in whole seconds, so each edge is one second wide


@pytest.mark.parametrize(
    ("action_source", "offset_s", "code"),
    [
        ("website", 60, None),
        ("website", 61, "event_time_in_future"),
        ("website", -7 * DAY, None),
        ("website", -7 * DAY - 1, "event_time_too_old"),
        ("physical_store", -7 * DAY - 1, None),
        ("physical_store", -62 * DAY, None),
        ("physical_store", -62 * DAY - 1, "event_time_too_old"),
        ("physical_store", 61, "event_time_in_future"),
    ],
)
def test_event_time_edges(action_source: str, offset_s: int, code: str | None) -> None:
    ev = server_event(action_source=action_source, event_time=int(EXACT) + offset_s)
    r = run("server", server_message(ev, received_at=EXACT))
    if code is None:
        assert r.dead_letters == [] and len(r.conversions) == 1
    else:
        assert codes_of(r) == [[code]]


def test_event_time_edges_with_a_fractional_received_at() -> None:
    # received_at ...000.5: +60 s is ...060.5, so ...060 is inside and ...061 outside
    for offset_s, ok in ((60, True), (61, False)):
        ev = server_event(event_time=int(RECEIVED_AT) + offset_s)
        assert len(run("server", server_message(ev)).conversions) == int(ok)


# --- insufficient_customer_information (SPEC §3) --------------------------------------------

DB = "1997-02-16"


@pytest.mark.parametrize(
    ("action_source", "user_data"),
    [
        ("website", {"db": DB, "client_user_agent": UA}),
        ("system_generated", {"db": DB}),
        ("system_generated", {"fn": "Ann", "ge": "f"}),
        ("system_generated", {"ln": "Lee", "ge": "female"}),
        ("system_generated", {"ge": "f"}),
        ("system_generated", {"fn": "Ann"}),
        ("website", {"client_user_agent": UA, "ct": "Paris", "st": "Île-de-France", "ge": "f"}),
        ("system_generated", {}),
        # nothing usable left after normalization: every value is dropped
        ("system_generated", {"em": "not-an-email", "ph": "12", "country": "Narnia"}),
        ("system_generated", {"em": "  ", "db": "1997-02-30"}),
        # what is left after normalization is a weak set
        ("system_generated", {"em": "no-at-sign", "fn": "Ann", "ge": "f"}),
    ],
)
def test_weak_or_empty_customer_information_is_rejected(
    action_source: str, user_data: dict[str, str]
) -> None:
    ev = server_event(
        action_source=action_source, user_data=user_data, event_source_url="https://x.example/"
    )
    r = run("server", server_message(ev))
    assert r.conversions == []
    (dl,) = r.dead_letters
    assert [(e["code"], e["field"]) for e in dl["errors"]] == [
        ("insufficient_customer_information", "user_data")
    ]


@pytest.mark.parametrize(
    "user_data",
    [
        {"fn": "Ann", "ln": "Lee", "ge": "f"},  # {fn, ln, ge} is inside no single weak set
        {"db": DB, "fn": "Ann"},
        {"db": DB, "ge": "f"},
        {"em": "ann@example.org"},
        {"fbp": "fb.1.1795300000000.123456"},
        {"em": "no-at-sign", "ph": "+1 650 555 1212"},  # em dropped, ph left
    ],
)
def test_sets_outside_the_weak_ones_are_accepted(user_data: dict[str, str]) -> None:
    ev = server_event(action_source="system_generated", user_data=user_data)
    r = run("server", server_message(ev))
    assert r.dead_letters == [] and len(r.conversions) == 1
