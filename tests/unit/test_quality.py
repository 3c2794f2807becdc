"""Match quality (SPEC §7): a 0-10 score from the match keys present; fbc and em weigh most."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import quality
from streams.pii import HASHED_KEYS, PLAIN_KEYS
from tests.helpers import UA, run, server_event, server_message

ALL_KEYS = sorted(HASHED_KEYS | PLAIN_KEYS)


def test_every_user_data_key_has_a_weight() -> None:
    assert set(quality.WEIGHTS) == HASHED_KEYS | PLAIN_KEYS
    assert all(w > 0 for w in quality.WEIGHTS.values())


def test_fbc_and_em_weigh_most() -> None:
    top = max(quality.WEIGHTS.values())
    assert {k for k, w in quality.WEIGHTS.items() if w == top} == {"fbc", "em"}
    runner_up = max(w for k, w in quality.WEIGHTS.items() if k not in ("fbc", "em"))
    assert runner_up < top


def test_the_spec_example_scores_8_1() -> None:
    # SPEC §7's example: ip, user agent, em, fbp, ph → 0.75 + 0.75 + 3.0 + 1.2 + 2.4
    ud = {
        "em": "John_Smith@Gmail.com",
        "ph": "+1 (650) 555-1212",
        "client_user_agent": UA,
        "client_ip_address": "203.0.113.7",
        "fbp": "fb.1.1795300000000.123456",
    }
    (c,) = run("server", server_message(server_event(user_data=ud))).conversions
    assert c["match_quality"] == {
        "score": 8.1,
        "keys": ["client_ip_address", "client_user_agent", "em", "fbp", "ph"],
    }


@pytest.mark.parametrize(
    ("user_data", "score", "keys"),
    [
        ({"em": "a@example.org", "client_user_agent": UA}, 3.8, ["client_user_agent", "em"]),
        (
            {"fbc": "fb.1.1795300000000.AbC", "client_user_agent": UA},
            3.8,
            ["client_user_agent", "fbc"],
        ),
        (
            {"ph": "+1 650 555 1212", "client_user_agent": UA},
            3.2,
            ["client_user_agent", "ph"],
        ),  # 3.15 half up
        # a value dropped by normalization does not count
        ({"em": "no-at-sign", "ph": "+16505551212", "client_user_agent": UA}, 3.2, None),
    ],
)
def test_scores_of_whole_conversions(
    user_data: dict[str, Any], score: float, keys: list[str] | None
) -> None:
    (c,) = run("server", server_message(server_event(user_data=user_data))).conversions
    assert c["match_quality"]["score"] == score
    if keys is not None:
        assert c["match_quality"]["keys"] == keys
    assert "em" not in c["match_quality"]["keys"] or "em" in c["user_data"]


def test_the_score_is_capped_at_10() -> None:
    assert quality.match_quality({k: "x" for k in ALL_KEYS}) == {"score": 10.0, "keys": ALL_KEYS}


def test_empty_values_and_unknown_keys_do_not_count() -> None:
    assert quality.match_quality({"em": "", "fbp": None, "email": "x"}) == {
        "score": 0.0,
        "keys": [],
    }


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(ALL_KEYS)), st.sampled_from(ALL_KEYS))
def test_score_is_in_range_and_a_key_never_lowers_it(keys: set[str], extra: str) -> None:
    before = quality.match_quality(dict.fromkeys(keys, "x"))
    after = quality.match_quality(dict.fromkeys(keys | {extra}, "x"))
    assert 0.0 <= before["score"] <= after["score"] <= quality.MAX_SCORE
    assert before["keys"] == sorted(keys)
    total = min(Decimal(10), sum((Decimal(str(quality.WEIGHTS[k])) for k in keys), Decimal(0)))
    assert before["score"] == float(total.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def test_half_way_scores_round_up_in_any_key_order() -> None:
    # anon_id 0.6 + client_ip_address 0.75 + country 0.2 = 1.55 exactly
    keys = ["country", "anon_id", "client_ip_address"]
    for order in (keys, keys[::-1], sorted(keys)):
        assert quality.match_quality(dict.fromkeys(order, "x"))["score"] == 1.6
