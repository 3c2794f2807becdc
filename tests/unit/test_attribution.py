"""SPEC §8 attribution: fbc and fbclid parsing, click windows, the repartition message,
the first-landing state and the candidates it yields (each one checked against
schemas/attribution_candidate.schema.json)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streams import codes
from streams.attribution import (
    LANDING_TTL,
    WINDOWS,
    Attributor,
    Click,
    Fbc,
    attribute,
    click_evidence,
    fbc_warning,
    fbclid_from_url,
    landing_expired,
    landing_from_url,
    parse_fbc,
    route,
    windows,
)
from streams.specs import ResolvedAd, resolve_ad

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/attribution_candidate.schema.json").read_text()
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
KEYS = SCHEMA["required"]

T0 = 1795400000
PIXEL = "1234567890"
CLICK = "IwAR2xYzAbC"
AD_ID = "23851"
SHOP = "https://shop.example"
LANDING_URL = f"{SHOP}/?fbclid={CLICK}&utm_campaign=winter&utm_source=facebook&ad_id={AD_ID}"
AD = {
    "ad_id": AD_ID,
    "objective": "CONVERSIONS",
    "optimization_goal": "OFFSITE_CONVERSIONS",
    "billing_event": "IMPRESSIONS",
    "creative_type": "PAGE_POST_LINK",
    "promoted_object": {"pixel_id": PIXEL, "custom_event_type": "PURCHASE", "page_id": "222"},
    "creative": {"object_story_id": "222_333"},
    "tracking_specs": [{"action.type": "offsite_conversion", "fb_pixel": [PIXEL]}],
}
CATALOG: dict[str, ResolvedAd] = {AD_ID: resolve_ad(AD)}


def fbc(click_time: int, fbclid: str = CLICK) -> str:
    return f"fb.1.{click_time * 1000}.{fbclid}"


def conversion(
    event_time: int = T0,
    *,
    name: str = "Purchase",
    url: str = f"{SHOP}/thanks",
    fbc: str | None = None,
    pixel: str = PIXEL,
    source: str = "website",
    lead_id: str | None = None,
    custom_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    user_data: dict[str, Any] = {
        "em": [hashlib.sha256(b"john@example.com").hexdigest()],
        "fbp": "fb.1.1795300000000.123456",
        "client_user_agent": "Mozilla/5.0",
    }
    if fbc is not None:
        user_data["fbc"] = fbc
    if lead_id is not None:
        user_data["lead_id"] = lead_id
    return {
        "conversion_id": hashlib.sha256(f"{name}|{event_time}|{url}|{fbc}".encode()).hexdigest(),
        "pixel_id": pixel,
        "event_name": name,
        "event_time": event_time,
        "event_id": None,
        "action_source": source,
        "event_source_url": url,
        "user_data": user_data,
        "custom_data": {"value": 49.9, "currency": "EUR"} if custom_data is None else custom_data,
        "sources": ["server"],
        "warnings": [],
        "received_at": event_time + 0.5,
    }


def assert_valid(candidate: dict[str, Any]) -> None:
    errs = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(candidate)]
    assert not errs, errs
    assert list(candidate) == KEYS


def run(
    *conversions: dict[str, Any],
    landing: dict[str, dict[str, Any]] | None = None,
    catalog: dict[str, ResolvedAd] | None = None,
) -> tuple[list[dict[str, Any]], Counter[tuple[str, ...]], dict[str, dict[str, Any]]]:
    state = {} if landing is None else landing
    tally: Counter[tuple[str, ...]] = Counter()
    out = attribute(
        conversions, Attributor(state, (CATALOG if catalog is None else catalog).get), tally
    )
    for candidate in out:
        assert_valid(candidate)
    # every conversion is counted once, with or without click evidence; the tests below
    # compare the rest of the tally
    with_evidence = tally.pop(("click_evidence", "with"), 0)
    without = tally.pop(("click_evidence", "without"), 0)
    assert with_evidence + without == len(conversions)
    assert with_evidence == sum(1 for c in conversions if click_evidence(c))
    return out, tally, state


# --- fbc ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fb.1.1795300000000.IwAR2xYzAbC", Fbc("IwAR2xYzAbC", 1795300000, False)),
        ("fb.1.1795300000999.IwAR2xYzAbC", Fbc("IwAR2xYzAbC", 1795300000, False)),
        ("fb.0.1795300000123.IwAR2xYzAbC.AQ", Fbc("IwAR2xYzAbC", 1795300000, False)),
        ("fb.2.1795300000.IwAR2xYzAbC", Fbc("IwAR2xYzAbC", 1795300000, True)),
        ("fb.1.1795300000.IwAR2xYzAbC.Ag-1", Fbc("IwAR2xYzAbC", 1795300000, True)),
        ("  fb.1.1795300000000.IwAR2xYzAbC\n", Fbc("IwAR2xYzAbC", 1795300000, False)),
        ("fb.1.1795300000000.Iw%41R-_+x", Fbc("Iw%41R-_+x", 1795300000, False)),
    ],
)
def test_parse_fbc_valid(value: str, expected: Fbc) -> None:
    assert parse_fbc(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "fb.1.17953000000.IwAR2xYzAbC",  # 11 digits
        "fb.1.179530000000.IwAR2xYzAbC",  # 12 digits
        "fb.1.17953000000000.IwAR2xYzAbC",  # 14 digits
        "fb.1.179530000000x.IwAR2xYzAbC",
        "fb.1.+795300000000.IwAR2xYzAbC",
        "fb.1.\uff11\uff17\uff19\uff15\uff13\uff10\uff10\uff10\uff10\uff10.IwAR2xYzAbC",
        "fb.1.1795300000000.",
        "fb.1.1795300000000",
        "fb.1.1795300000000.IwAR2xYzAbC.AQ.x",
        "fb.1.1795300000000.IwAR2xYzAbC.",
        "FB.1.1795300000000.IwAR2xYzAbC",
        "fbc.1.1795300000000.IwAR2xYzAbC",
        "fb.x.1795300000000.IwAR2xYzAbC",
        "fb..1795300000000.IwAR2xYzAbC",
        "fb.1..IwAR2xYzAbC",
        "",
        "   ",
    ],
)
def test_parse_fbc_rejects(value: str) -> None:
    assert parse_fbc(value) is None


@pytest.mark.parametrize("value", [None, 1795300000000, b"fb.1.1795300000000.AbC", ["fb"], {}])
def test_parse_fbc_non_str(value: object) -> None:
    assert parse_fbc(value) is None


def test_fbclid_is_case_sensitive_and_byte_exact() -> None:
    upper = parse_fbc("fb.1.1795300000000.IwAR2xYzAbC")
    lower = parse_fbc("fb.1.1795300000000.iwar2xyzabc")
    assert upper is not None and lower is not None
    assert upper.fbclid == "IwAR2xYzAbC"
    assert lower.fbclid == "iwar2xyzabc"
    assert upper != lower


FBCLID_CHARS = st.text(
    alphabet=st.characters(blacklist_characters=".", blacklist_categories=["Z", "Cc", "Cs"]),
    min_size=1,
)


@given(st.integers(0, 9_999_999_999_999), FBCLID_CHARS)
def test_parse_fbc_round_trip(ms: int, fbclid: str) -> None:
    parsed = parse_fbc(f"fb.1.{ms:013d}.{fbclid}")
    assert parsed == Fbc(fbclid, ms // 1000, False)


@given(st.one_of(st.text(), st.from_regex(r"fb\.[0-9]\.[0-9]{8,15}\.[^.]{0,5}(\.[^.]*)?")))
def test_parse_fbc_never_raises(value: str) -> None:
    result = parse_fbc(value)
    assert result is None or (result.fbclid and result.click_time >= 0)


def test_fbc_warning() -> None:
    assert fbc_warning({"fbc": "fb.1.1795300000.AbC"}) == codes.FBC_TIME_IN_SECONDS
    assert codes.FBC_TIME_IN_SECONDS == "fbc_time_in_seconds"
    assert fbc_warning({"fbc": "fb.1.1795300000000.AbC"}) is None
    assert fbc_warning({"fbc": "fb.1.17953000000.AbC"}) is None
    assert fbc_warning({}) is None


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{SHOP}/?fbclid=IwAR2xYzAbC&utm_source=fb", "IwAR2xYzAbC"),
        (f"{SHOP}/p?a=1&fbclid=IwAR2xYzAbC", "IwAR2xYzAbC"),
        (f"{SHOP}/?a=1", None),
        (f"{SHOP}/", None),
        (f"{SHOP}/?fbclid=", None),
        (f"{SHOP}/?fbclid=%20", None),
        (f"{SHOP}/?fbclid=&fbclid=Second", "Second"),
        (f"{SHOP}/?fbclid=First&fbclid=Second", "First"),
        (f"{SHOP}/?fbclid=Iw%41R%2Bx%2F", "IwAR+x/"),
        (f"{SHOP}/?fbclid=IwAR2xYzAbC#top", "IwAR2xYzAbC"),
        (f"{SHOP}/?a=1#fbclid=IwAR2xYzAbC", None),
        (f"{SHOP}/?FBCLID=IwAR2xYzAbC", None),
        (f"{SHOP}/?xfbclid=IwAR2xYzAbC", None),
        ("http://[::1/?fbclid=IwAR2xYzAbC", None),
        ("", None),
    ],
)
def test_fbclid_from_url(url: str, expected: str | None) -> None:
    assert fbclid_from_url(url) == expected


@pytest.mark.parametrize("value", [None, 12, b"https://a/?fbclid=x", {"fbclid": "x"}])
def test_fbclid_from_url_non_str(value: object) -> None:
    assert fbclid_from_url(value) is None


@given(st.text())
def test_fbclid_from_url_never_raises(url: str) -> None:
    result = fbclid_from_url(url)
    assert result is None or result.strip()


@given(st.text(), st.text().filter(lambda v: bool(v.strip())))
def test_fbclid_from_url_round_trip(prefix: str, value: str) -> None:
    url = f"https://shop.example/p?{urlencode({'x': prefix, 'fbclid': value})}#f"
    assert fbclid_from_url(url) == value


def test_landing_from_url() -> None:
    url = (
        f"{SHOP}/p?fbclid={CLICK}&utm_campaign=winter&utm_source=facebook&utm_source=later"
        "&utm_medium=&utm_=x&utm_content=a%20b&ad_id=&ad_id=23851&adset_id=77&campaign_id=66"
    )
    assert landing_from_url(url, T0) == {
        "url": url,
        "utm": {"campaign": "winter", "source": "facebook", "content": "a b"},
        "ad_id": "23851",
        "campaign_id": "66",
        "adset_id": "77",
        "time": T0,
    }


def test_landing_from_url_without_params() -> None:
    for url in (f"{SHOP}/", "http://[::1/?ad_id=1"):
        assert landing_from_url(url, 7) == {
            "url": url,
            "utm": {},
            "ad_id": None,
            "campaign_id": None,
            "adset_id": None,
            "time": 7,
        }


@pytest.mark.parametrize(
    ("lag", "expected"),
    [
        (0, ["1d_click", "7d_click", "28d_click"]),
        (86_400, ["1d_click", "7d_click", "28d_click"]),
        (86_401, ["7d_click", "28d_click"]),
        (604_800, ["7d_click", "28d_click"]),
        (604_801, ["28d_click"]),
        (2_419_200, ["28d_click"]),
        (2_419_201, []),
        (-1, []),
    ],
)
def test_windows(lag: int, expected: list[str]) -> None:
    assert windows(lag) == expected


def test_window_constants() -> None:
    assert WINDOWS == (("1d_click", 86_400), ("7d_click", 604_800), ("28d_click", 2_419_200))
    assert LANDING_TTL == 28 * 86_400


def test_landing_expired() -> None:
    value = {"time": T0}
    assert not landing_expired(value, T0 + LANDING_TTL)
    assert landing_expired(value, T0 + LANDING_TTL + 0.5)
    assert not landing_expired(value, T0)


# --- click evidence and routing ------------------------------------------------------------


def test_click_evidence() -> None:
    fbc_only = conversion(fbc=fbc(T0 - 60))
    assert click_evidence(fbc_only) == [Click(CLICK, T0 - 60)]
    url_only = conversion(url=LANDING_URL)
    assert click_evidence(url_only) == [Click(CLICK, None)]
    same = conversion(url=LANDING_URL, fbc=fbc(T0 - 60))
    assert click_evidence(same) == [Click(CLICK, T0 - 60)]
    two = conversion(url=f"{SHOP}/?fbclid=Other", fbc=fbc(T0 - 60))
    assert click_evidence(two) == [Click(CLICK, T0 - 60), Click("Other", None)]
    case = conversion(url=f"{SHOP}/?fbclid={CLICK.lower()}", fbc=fbc(T0 - 60))
    assert click_evidence(case) == [Click(CLICK, T0 - 60), Click(CLICK.lower(), None)]
    bad_fbc = conversion(url=LANDING_URL, fbc="fb.1.123.x")
    assert click_evidence(bad_fbc) == [Click(CLICK, None)]
    assert click_evidence(conversion()) == []
    assert click_evidence({"event_source_url": None}) == []


def test_route_message() -> None:
    conv = conversion(url=f"{SHOP}/?fbclid=Other", fbc=fbc(T0 - 60))
    summary = {
        "conversion_id": conv["conversion_id"],
        "pixel_id": PIXEL,
        "event_name": "Purchase",
        "event_time": T0,
        "action_source": "website",
        "has_lead_id": False,
        "value": 49.9,
        "currency": "EUR",
    }
    assert route(conv) == [
        (CLICK, {"fbclid": CLICK, "fbc_time": T0 - 60, "hit": None, "conversion": summary}),
        (
            "Other",
            {
                "fbclid": "Other",
                "fbc_time": None,
                "hit": {"url": f"{SHOP}/?fbclid=Other", "time": T0},
                "conversion": summary,
            },
        ),
    ]


def test_route_same_fbclid_carries_hit_and_fbc_time() -> None:
    [(key, msg)] = route(conversion(url=LANDING_URL, fbc=fbc(T0 - 60)))
    assert key == CLICK
    assert msg["fbc_time"] == T0 - 60
    assert msg["hit"] == {"url": LANDING_URL, "time": T0}


def test_route_without_click_evidence() -> None:
    assert route(conversion()) == []
    assert route(conversion(fbc="fb.1.17953000000.AbC")) == []


def test_route_message_holds_no_user_data() -> None:
    conv = conversion(url=LANDING_URL, fbc=fbc(T0 - 60), source="system_generated", lead_id="L9")
    [(_, msg)] = route(conv)
    assert set(msg) == {"fbclid", "fbc_time", "hit", "conversion"}
    assert set(msg["conversion"]) == {
        "conversion_id",
        "pixel_id",
        "event_name",
        "event_time",
        "action_source",
        "has_lead_id",
        "value",
        "currency",
    }
    assert msg["conversion"]["has_lead_id"] is True
    text = orjson.dumps(msg).decode()
    for value in conv["user_data"].values():
        for v in value if isinstance(value, list) else [value]:
            assert v not in text


def test_route_custom_data() -> None:
    [(_, msg)] = route(conversion(url=LANDING_URL, custom_data={}))
    assert (msg["conversion"]["value"], msg["conversion"]["currency"]) == (None, None)
    [(_, msg)] = route(conversion(url=LANDING_URL, custom_data={"value": 0, "currency": "USD"}))
    assert (msg["conversion"]["value"], msg["conversion"]["currency"]) == (0, "USD")


# --- the stateful step ----------------------------------------------------------------------


def expected_landing(url: str = LANDING_URL) -> dict[str, Any]:
    return {
        "url": url,
        "utm": {"campaign": "winter", "source": "facebook"},
        "ad_id": AD_ID,
        "campaign_id": None,
        "adset_id": None,
    }


def test_landing_first_then_conversion() -> None:
    page_view = conversion(T0, name="PageView", url=LANDING_URL, custom_data={})
    purchase = conversion(T0 + 100_000, fbc=fbc(T0 - 5))
    (pv, buy), tally, state = run(page_view, purchase)
    assert pv == {
        "conversion_id": page_view["conversion_id"],
        "pixel_id": PIXEL,
        "event_name": "PageView",
        "event_time": T0,
        "value": None,
        "currency": None,
        "fbclid": CLICK,
        "click_time": T0,
        "lag_seconds": 0,
        "windows": ["1d_click", "7d_click", "28d_click"],
        "landing": expected_landing(),
        "specs": {"ad_id": AD_ID, "conversion_spec": False, "tracking_specs": [2]},
    }
    assert buy == {
        "conversion_id": purchase["conversion_id"],
        "pixel_id": PIXEL,
        "event_name": "Purchase",
        "event_time": T0 + 100_000,
        "value": 49.9,
        "currency": "EUR",
        "fbclid": CLICK,
        "click_time": T0 - 5,
        "lag_seconds": 100_005,
        "windows": ["7d_click", "28d_click"],
        "landing": expected_landing(),
        "specs": {"ad_id": AD_ID, "conversion_spec": True, "tracking_specs": [2]},
    }
    assert state == {CLICK: {**expected_landing(), "time": T0}}
    assert tally == Counter(
        {
            ("landing_stored",): 1,
            ("spec_lookups", "known"): 2,
            ("spec_matches", "tracking"): 2,
            ("spec_matches", "conversion"): 1,
            ("candidates", "1d_click"): 1,
            ("candidates", "7d_click"): 2,
            ("candidates", "28d_click"): 2,
        }
    )


def test_conversion_before_landing() -> None:
    purchase = conversion(T0 + 10, fbc=fbc(T0 - 50))
    page_view = conversion(T0, name="PageView", url=LANDING_URL)
    (buy, pv), tally, state = run(purchase, page_view)
    assert (buy["click_time"], buy["lag_seconds"]) == (T0 - 50, 60)
    assert buy["landing"] is None
    assert buy["specs"] is None
    assert pv["landing"] == expected_landing()
    assert (pv["click_time"], pv["lag_seconds"]) == (T0, 0)
    assert tally["spec_lookups", "no_ad_id"] == 1
    assert tally["spec_lookups", "known"] == 1
    assert tally["landing_stored",] == 1
    assert set(state) == {CLICK}


def test_url_only_conversion_is_its_own_landing() -> None:
    lead = conversion(T0, name="Lead", url=LANDING_URL)
    [cand], tally, state = run(lead)
    assert cand["click_time"] == T0
    assert cand["lag_seconds"] == 0
    assert cand["windows"] == ["1d_click", "7d_click", "28d_click"]
    assert cand["landing"] == expected_landing()
    assert cand["specs"] == {"ad_id": AD_ID, "conversion_spec": False, "tracking_specs": [2]}
    assert state[CLICK]["time"] == T0
    assert tally["landing_stored",] == 1


def test_url_only_conversion_uses_the_first_hit() -> None:
    first = conversion(T0, name="PageView", url=LANDING_URL)
    later = conversion(T0 + 90_000, url=f"{SHOP}/thanks?fbclid={CLICK}")
    [_, cand], tally, state = run(first, later)
    assert (cand["click_time"], cand["lag_seconds"]) == (T0, 90_000)
    assert cand["windows"] == ["7d_click", "28d_click"]
    assert cand["landing"] == expected_landing()
    assert state[CLICK]["url"] == LANDING_URL
    assert tally["landing_stored",] == 1


def test_earlier_hit_arriving_later_replaces_landing() -> None:
    late_url = f"{SHOP}/b?fbclid={CLICK}&ad_id=1"
    early_url = f"{SHOP}/a?fbclid={CLICK}&utm_source=ig"
    tie_url = f"{SHOP}/c?fbclid={CLICK}"
    a = conversion(T0 + 50, name="PageView", url=late_url)
    b = conversion(T0, name="PageView", url=early_url)
    tie = conversion(T0, name="ViewContent", url=tie_url)
    after = conversion(T0 + 100, fbc=fbc(T0 - 1))
    (ca, cb, ctie, cafter), tally, state = run(a, b, tie, after)
    assert (ca["click_time"], ca["landing"]["url"], ca["specs"]) == (T0 + 50, late_url, None)
    assert tally["spec_lookups", "unknown_ad"] == 1
    assert (cb["click_time"], cb["landing"]["url"]) == (T0, early_url)
    assert (ctie["click_time"], ctie["landing"]["url"]) == (T0, early_url)
    assert cafter["landing"] == {
        "url": early_url,
        "utm": {"source": "ig"},
        "ad_id": None,
        "campaign_id": None,
        "adset_id": None,
    }
    assert cafter["click_time"] == T0 - 1
    assert state[CLICK]["time"] == T0
    assert tally["landing_stored",] == 2


@given(st.permutations(range(6)))
def test_first_landing_does_not_depend_on_arrival_order(order: list[int]) -> None:
    hits = [
        conversion(T0 + 7 * i, name="PageView", url=f"{SHOP}/{i}?fbclid={CLICK}") for i in order
    ]
    _, _, state = run(*hits)
    assert state == {
        CLICK: {
            "url": f"{SHOP}/0?fbclid={CLICK}",
            "utm": {},
            "ad_id": None,
            "campaign_id": None,
            "adset_id": None,
            "time": T0,
        }
    }


def test_out_of_window() -> None:
    future = conversion(T0, fbc=fbc(T0 + 1))
    old = conversion(T0, fbc=fbc(T0 - LANDING_TTL - 1))
    edge = conversion(T0, fbc=fbc(T0 - LANDING_TTL))
    [cand], tally, _ = run(future, old, edge)
    assert (cand["lag_seconds"], cand["windows"]) == (LANDING_TTL, ["28d_click"])
    assert cand["conversion_id"] == edge["conversion_id"]
    assert tally["candidates_out_of_window", "negative"] == 1
    assert tally["candidates_out_of_window", "too_old"] == 1
    assert tally["candidates", "28d_click"] == 1
    assert tally["candidates", "1d_click"] == 0


def test_stale_landing_not_yet_expired_is_too_old() -> None:
    state = {CLICK: landing_from_url(LANDING_URL, T0 - LANDING_TTL - 1)}
    out, tally, _ = run(conversion(T0, url=LANDING_URL), landing=state)
    assert out == []
    assert tally == Counter({("candidates_out_of_window", "too_old"): 1})


def test_message_without_time_or_landing() -> None:
    tally: Counter[tuple[str, ...]] = Counter()
    msg = {"fbclid": CLICK, "fbc_time": None, "hit": None, "conversion": {"event_time": T0}}
    assert Attributor({}, CATALOG.get).handle(msg, tally) is None
    assert tally == Counter()


def test_replayed_message_is_idempotent() -> None:
    conv = conversion(T0, url=LANDING_URL)
    [(_, msg)] = route(conv)
    state: dict[str, dict[str, Any]] = {}
    tally: Counter[tuple[str, ...]] = Counter()
    attributor = Attributor(state, CATALOG.get)
    first = attributor.handle(msg, tally)
    assert first is not None
    assert attributor.handle(msg, tally) == first
    assert tally["landing_stored",] == 1


# --- specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pixel", "expected", "matched"),
    [
        (
            "Purchase",
            PIXEL,
            {"conversion_spec": True, "tracking_specs": [2]},
            ["tracking", "conversion"],
        ),
        ("Lead", PIXEL, {"conversion_spec": False, "tracking_specs": [2]}, ["tracking"]),
        ("Purchase", "999", {"conversion_spec": False, "tracking_specs": []}, []),
    ],
)
def test_specs_known_ad(
    name: str, pixel: str, expected: dict[str, Any], matched: list[str]
) -> None:
    [cand], tally, _ = run(conversion(T0 + 5, name=name, pixel=pixel, url=LANDING_URL))
    assert cand["specs"] == {"ad_id": AD_ID, **expected}
    want: Counter[tuple[str, ...]] = Counter({("landing_stored",): 1, ("spec_lookups", "known"): 1})
    want.update(("spec_matches", m) for m in matched)
    want.update(("candidates", w) for w in ("1d_click", "7d_click", "28d_click"))
    assert tally == want


@pytest.mark.parametrize(("lead_id", "expected"), [("L9", [2, 3]), (None, [2])])
def test_specs_crm_lead(lead_id: str | None, expected: list[int]) -> None:
    leadgen = {"action.type": "leadgen_quality_conversion", "fb_pixel": PIXEL}
    ad = {**AD, "tracking_specs": [*AD["tracking_specs"], leadgen]}
    lead = conversion(T0, name="Lead", url=LANDING_URL, source="system_generated", lead_id=lead_id)
    [cand], _, _ = run(lead, catalog={AD_ID: resolve_ad(ad)})
    assert cand["specs"] == {"ad_id": AD_ID, "conversion_spec": False, "tracking_specs": expected}


def test_specs_unknown_ad() -> None:
    [cand], tally, _ = run(conversion(T0, url=LANDING_URL), catalog={"1": CATALOG[AD_ID]})
    assert cand["landing"] == expected_landing()
    assert cand["specs"] is None
    assert tally["spec_lookups", "unknown_ad"] == 1
    assert tally["spec_lookups", "known"] == 0


def test_specs_landing_without_ad_id() -> None:
    [cand], tally, _ = run(conversion(T0, url=f"{SHOP}/?fbclid={CLICK}&utm_source=fb"))
    assert cand["landing"]["ad_id"] is None
    assert cand["specs"] is None
    assert tally["spec_lookups", "no_ad_id"] == 1


# --- every candidate is a valid record ------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.integers(0, 40 * 86_400),
            st.one_of(st.none(), st.integers(-2 * 86_400, 40 * 86_400)),
            st.sampled_from([None, "A1", "b2", "A1&ad_id=23851", "b2&ad_id=404&utm_x=y"]),
            st.sampled_from(["Purchase", "Lead", "PageView"]),
        ),
        max_size=8,
    )
)
def test_candidates_are_valid(events: list[tuple[int, int | None, str | None, str]]) -> None:
    convs = []
    for t, fbc_offset, query, name in events:
        url = f"{SHOP}/?fbclid={query}" if query else f"{SHOP}/x"
        click = None if fbc_offset is None else fbc(T0 + t - fbc_offset, "A1")
        convs.append(conversion(T0 + t, name=name, url=url, fbc=click))
    out, tally, state = run(*convs)
    for cand in out:
        assert cand["lag_seconds"] == cand["event_time"] - cand["click_time"]
        assert cand["windows"] == windows(cand["lag_seconds"])
        if cand["fbclid"] == "b2":
            assert cand["landing"] is not None
        if cand["landing"] is not None:
            assert fbclid_from_url(cand["landing"]["url"]) == cand["fbclid"]
            assert cand["fbclid"] in state
    dropped = sum(n for (k, *_), n in tally.items() if k == "candidates_out_of_window")
    assert len(out) + dropped == sum(len(route(c)) for c in convs)
    assert sum(n for (k, *_), n in tally.items() if k == "candidates") == sum(
        len(c["windows"]) for c in out
    )


_URL_PIECES = ["fbclid", "fb%63lid", "FBCLID", "fbc\tlid", "fb+clid", "=", "&", "?", "#", "%"]
_URL_PIECES += ["IwAR1", " ", "%20", "https://shop.example/p", "[", "\n", "\u00e9", "utm_source"]


def _reference_fbclid(url: str) -> str | None:
    try:
        qs = urlsplit(url).query
    except ValueError:
        return None
    return next(
        (v for k, v in parse_qsl(qs, keep_blank_values=True) if k == "fbclid" and v.strip()), None
    )


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_URL_PIECES), max_size=12).map("".join))
@example("https://shop.example/?fb%63lid=IwAR1")
@example("https://shop.example/?fbc\tlid=IwAR1")
@example("https://shop.example/p?utm_source=x")
def test_fbclid_from_url_is_the_stdlib_split(url: str) -> None:
    """Exactly what urllib.parse finds, with and without the no-click-id fast path."""
    assert fbclid_from_url(url) == _reference_fbclid(url)
