"""Raw personal data never appears in an output, a dead letter, a log line or a metric
label: distinctive raw values go in, everything produced is searched for them."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from streams import metrics
from streams.tally import Tally
from tests.helpers import DELETE, UA, pixel_hit, run, server_event, server_message

# Each raw value with the normalized forms that are still personal data.
RAW = {
    "em": ("Zebulon.QUARTZFIELD@Example.org ", ["zebulon.quartzfield", "quartzfield"]),
    "ph": ("+1 (415) 867-5309", ["4158675309", "867-5309", "8675309"]),
    "fn": ("Zebulon", ["zebulon"]),
    "ln": ("Quartzfield-Smythe", ["quartzfield", "smythe"]),
    "db": ("1983-07-14", ["19830714", "1983-07-14"]),
    "ct": ("Xylophonia Springs", ["xylophonia"]),
    "st": ("Wyoming", ["wyoming"]),
    "zp": ("82001-4433", ["82001", "4433"]),
    "country": ("Liechtenstein", ["liechtenstein"]),
    "external_id": ("crm-ZQX-777", ["crm-zqx-777", "ZQX-777"]),
    "ge": ("Female", ["female"]),
}
UNKNOWN_KEY_VALUE = "secret-side-channel-value"


def needles() -> list[str]:
    out = [UNKNOWN_KEY_VALUE]
    for raw, forms in RAW.values():
        out.append(raw.strip())
        out.extend(forms)
    return out


def user_data() -> dict[str, Any]:
    ud: dict[str, Any] = {k: v for k, (v, _) in RAW.items()}
    ud["client_user_agent"] = UA
    ud["email_address"] = UNKNOWN_KEY_VALUE  # unknown key: must be dropped, never echoed
    return ud


def all_text(result: Any) -> str:
    return orjson.dumps([result.conversions, result.dead_letters]).decode()


def assert_clean(text: str) -> None:
    low = text.lower()
    leaks = [n for n in needles() if n.lower() in low]
    assert not leaks, f"raw PII found: {leaks}"


@pytest.mark.parametrize(
    "change",
    [
        {},  # valid
        {"custom_data": {"value": 1}},  # invalid: missing currency
        {"event_name": DELETE, "action_source": "bogus"},  # invalid, several errors
        {"event_time": "not a time"},
    ],
)
def test_server_events_valid_and_invalid(change: dict[str, Any], caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    ev = server_event(user_data=user_data(), **change)
    result = run("server", server_message(ev))
    assert len(result.conversions) + len(result.dead_letters) == 1
    assert_clean(all_text(result))
    # the per-event path logs nothing at all (a log line about an event could carry its
    # data); the worker's own log lines are checked for PII on the broker
    # (tests/integration/test_parity_and_pii.py)
    assert caplog.records == []


def test_wrong_types_are_removed_not_echoed() -> None:
    ev = server_event(user_data={"em": {"nested": RAW["em"][0]}, "ph": [RAW["ph"][0], 5.5],
                                 "fn": True, "client_user_agent": UA})  # fmt: skip
    result = run("server", server_message(ev))
    assert_clean(all_text(result))


def test_browser_hits_valid_and_invalid() -> None:
    params = {f"ud[{k}]": v for k, (v, _) in RAW.items()}
    params["ud[mail]"] = UNKNOWN_KEY_VALUE
    valid = pixel_hit(params)
    invalid = pixel_hit({**params, "cd[currency]": "NOPE"})
    result = run("browser", valid, invalid)
    assert len(result.conversions) == 1 and len(result.dead_letters) == 1
    assert_clean(all_text(result))


def test_metric_labels_after_flush() -> None:
    ev = server_event(user_data=user_data(), event_name="Zebulon")  # custom event name
    result = run("server", server_message(ev), server_message(server_event(user_data=user_data())))
    tally: Tally = result.tally
    tally.flush()
    assert_clean(generate_latest(metrics.REGISTRY).decode())
