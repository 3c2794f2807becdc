"""Tracking / conversion spec engine (SPEC §9, docs/specs.md).

Expected specs are written out in the seed's own notation (Meta's "Tracking and Conversion
Specs" page) with the test ids filled in, never computed from ``streams/spec_tables.py``,
so a transcription error in the table fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import spec_tables
from streams.specs import (
    SpecError,
    actions_from_event,
    bid_type,
    conversion_actions,
    conversion_spec,
    default_tracking_specs,
    expand_action_types,
    explain,
    explain_lines,
    explain_match,
    match_ad,
    normalize_action,
    normalize_spec,
    resolve,
    resolve_ad,
    resolve_tracking_specs,
    spec_matches,
    table_objective,
)

PIXEL, PAGE, POST, APP, EVENT, OFFER = "111", "222", "333", "444", "555", "666"


def make_ad(**fields: Any) -> dict[str, Any]:
    """An ad (SPEC §9) promoting page PAGE, whose creative is post PAGE_POST."""
    promoted = fields.pop("promoted_object", {})
    if isinstance(promoted, dict):
        promoted = {"page_id": PAGE, **promoted}
    ad: dict[str, Any] = {
        "ad_id": "23851",
        "objective": "LINK_CLICKS",
        "optimization_goal": "LINK_CLICKS",
        "billing_event": "IMPRESSIONS",
        "creative_type": "PAGE_POST_LINK",
        "promoted_object": promoted,
        "creative": {"object_story_id": f"{PAGE}_{POST}"},
        "tracking_specs": [],
    }
    ad.update(fields)
    return ad


def specs(*raw: dict[str, Any]) -> list[Any]:
    return [normalize_spec(s) for s in raw]


PIXEL_PURCHASE = {"pixel_id": PIXEL, "custom_event_type": "PURCHASE"}
POST_ENGAGEMENT = {"action.type": "post_engagement", "post": POST, "page": PAGE}
PAGE_LIKE = {"action.type": "like", "page": PAGE}
LINK_CLICK_OBJECT = {"action.type": "link_click", "object": PAGE}
OFFSITE = {"action.type": "offsite_conversion", "fb_pixel": PIXEL}

# One case per row of the seed's default tracking spec table; the NONE row ("see default
# tracking specs by ad type") is one case per ad type of the seed's by-ad-type table.
ROW_CASES: list[Any] = [
    pytest.param(
        "CANVAS_APP_ENGAGEMENT",
        {"objective": "CANVAS_APP_ENGAGEMENT", "optimization_goal": "APP_INSTALLS",
         "creative_type": "CANVAS_APP_ENGAGEMENT", "promoted_object": {"application_id": APP}},
        [{"action.type": "app_engagement", "application": APP}, POST_ENGAGEMENT],
        id="CANVAS_APP_ENGAGEMENT",
    ),
    pytest.param(
        "CANVAS_APP_INSTALLS",
        {"objective": "CANVAS_APP_INSTALLS", "optimization_goal": "LINK_CLICKS",
         "creative_type": "CANVAS_APP_INSTALL", "promoted_object": {"application_id": APP}},
        [{"action.type": "app_engagement", "application": APP}, POST_ENGAGEMENT],
        id="CANVAS_APP_INSTALLS",
    ),
    pytest.param(
        "CONVERSIONS/page_post/OFFSITE_CONVERSIONS",
        {"objective": "CONVERSIONS", "optimization_goal": "OFFSITE_CONVERSIONS",
         "creative_type": "PAGE_POST_PHOTO", "promoted_object": PIXEL_PURCHASE},
        [POST_ENGAGEMENT, PAGE_LIKE],
        id="CONVERSIONS/page_post/OFFSITE_CONVERSIONS",
    ),
    pytest.param(
        "CONVERSIONS/page_post/other_goal",
        {"objective": "CONVERSIONS", "optimization_goal": "LINK_CLICKS",
         "creative_type": "PAGE_POST_LINK", "promoted_object": PIXEL_PURCHASE},
        [OFFSITE, POST_ENGAGEMENT, PAGE_LIKE],
        id="CONVERSIONS/page_post/other_goal",
    ),
    pytest.param(
        "CONVERSIONS/domain/OFFSITE_CONVERSIONS",
        {"objective": "CONVERSIONS", "optimization_goal": "OFFSITE_CONVERSIONS",
         "creative_type": "DOMAIN", "promoted_object": PIXEL_PURCHASE},
        [LINK_CLICK_OBJECT, PAGE_LIKE],
        id="CONVERSIONS/domain/OFFSITE_CONVERSIONS",
    ),
    pytest.param(
        "CONVERSIONS/domain/other_goal",
        {"objective": "CONVERSIONS", "optimization_goal": "IMPRESSIONS",
         "creative_type": "DOMAIN", "promoted_object": PIXEL_PURCHASE},
        [OFFSITE, LINK_CLICK_OBJECT, PAGE_LIKE],
        id="CONVERSIONS/domain/other_goal",
    ),
    pytest.param(
        "EVENT_RESPONSES/other_goal",
        {"objective": "EVENT_RESPONSES", "optimization_goal": "IMPRESSIONS",
         "creative_type": "EVENT", "promoted_object": {"event_id": EVENT}},
        [{"action.type": "rsvp", "response": "yes", "event": EVENT},
         {"action.type": "rsvp", "response": "maybe", "event": EVENT},
         {"action.type": "rsvp", "response": "no", "event": EVENT}],
        id="EVENT_RESPONSES/other_goal",
    ),
    pytest.param(
        "EVENT_RESPONSES/EVENT_RESPONSES",
        {"objective": "EVENT_RESPONSES", "optimization_goal": "EVENT_RESPONSES",
         "creative_type": "EVENT", "promoted_object": {"event_id": EVENT}},
        [],
        id="EVENT_RESPONSES/EVENT_RESPONSES",
    ),
    pytest.param(
        "LINK_CLICKS/page_post",
        {"objective": "LINK_CLICKS", "optimization_goal": "CLICKS", "billing_event": "CLICKS",
         "creative_type": "PAGE_POST_PHOTO"},
        [POST_ENGAGEMENT],
        id="LINK_CLICKS/page_post",
    ),
    pytest.param(
        "LINK_CLICKS/domain/LINK_CLICKS",
        {"objective": "LINK_CLICKS", "optimization_goal": "LINK_CLICKS",
         "creative_type": "DOMAIN"},
        [PAGE_LIKE],
        id="LINK_CLICKS/domain/LINK_CLICKS",
    ),
    pytest.param(
        "LINK_CLICKS/domain/other_goal",
        {"objective": "LINK_CLICKS", "optimization_goal": "IMPRESSIONS",
         "creative_type": "DOMAIN"},
        [LINK_CLICK_OBJECT, PAGE_LIKE],
        id="LINK_CLICKS/domain/other_goal",
    ),
    pytest.param(
        "MOBILE_APP_ENGAGEMENT",
        {"objective": "MOBILE_APP_ENGAGEMENT", "optimization_goal": "LINK_CLICKS",
         "creative_type": "MOBILE_APP_ENGAGEMENT", "promoted_object": {"application_id": APP}},
        [POST_ENGAGEMENT],
        id="MOBILE_APP_ENGAGEMENT",
    ),
    pytest.param(
        "MOBILE_APP_INSTALLS",
        {"objective": "MOBILE_APP_INSTALLS", "optimization_goal": "APP_INSTALLS",
         "creative_type": "MOBILE_APP_INSTALL", "promoted_object": {"application_id": APP}},
        [POST_ENGAGEMENT],
        id="MOBILE_APP_INSTALLS",
    ),
    pytest.param(
        "NONE/domain",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS", "creative_type": "DOMAIN"},
        [{"action.type": "link_click", "object": PAGE}],
        id="NONE/domain",
    ),
    pytest.param(
        "NONE/page_like",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS", "creative_type": "PAGE_LIKE"},
        [{"action.type": "like", "page": PAGE}],
        id="NONE/page_like",
    ),
    pytest.param(
        "NONE/page_post_link",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS",
         "creative_type": "PAGE_POST_LINK"},
        [{"action.type": ["link_click"], "post": [POST], "post.wall": [PAGE]}],
        id="NONE/page_post_link",
    ),
    pytest.param(
        "NONE/other_page_post",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS",
         "creative_type": "PAGE_POST_VIDEO"},
        [POST_ENGAGEMENT],
        id="NONE/other_page_post",
    ),
    pytest.param(
        "NONE/event",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS", "creative_type": "EVENT",
         "promoted_object": {"event_id": EVENT}},
        [{"action.type": "rsvp", "response": "yes", "event": EVENT}],
        id="NONE/event",
    ),
    pytest.param(
        "NONE/offer",
        {"objective": "NONE", "optimization_goal": "IMPRESSIONS",
         "creative_type": "PAGE_POST_OFFER", "promoted_object": {"offer_id": OFFER}},
        [{"action.type": "receive_offer", "offer": OFFER, "offer.creator": PAGE}],
        id="NONE/offer",
    ),
    pytest.param(
        "PAGE_LIKES",
        {"objective": "PAGE_LIKES", "optimization_goal": "PAGE_LIKES",
         "creative_type": "PAGE_LIKE"},
        [{"action.type": ["page_engagement"], "page": [PAGE]}],
        id="PAGE_LIKES",
    ),
    pytest.param(
        "POST_ENGAGEMENT/other_goal",
        {"objective": "POST_ENGAGEMENT", "optimization_goal": "IMPRESSIONS",
         "creative_type": "PAGE_POST_STATUS"},
        [POST_ENGAGEMENT],
        id="POST_ENGAGEMENT/other_goal",
    ),
    pytest.param(
        "POST_ENGAGEMENT/POST_ENGAGEMENT",
        {"objective": "POST_ENGAGEMENT", "optimization_goal": "POST_ENGAGEMENT",
         "creative_type": "PAGE_POST_PHOTO"},
        [],
        id="POST_ENGAGEMENT/POST_ENGAGEMENT",
    ),
    pytest.param(
        "POST_ENGAGEMENT/testing_dwell",
        {"objective": "POST_ENGAGEMENT", "optimization_goal": "POST_ENGAGEMENT",
         "creative_type": "PAGE_POST_VIDEO"},
        [{"action.type": "dwell", "post": POST, "page": PAGE}],
        id="POST_ENGAGEMENT/testing_dwell",
    ),
    pytest.param(
        "PRODUCT_CATALOG_SALES",
        {"objective": "PRODUCT_CATALOG_SALES", "optimization_goal": "OFFSITE_CONVERSIONS",
         "creative_type": "DYNAMIC_PRODUCT",
         "promoted_object": {**PIXEL_PURCHASE, "product_set_id": "777"}},
        [{"action.type": "post_engagement", "page": PAGE, "post": POST}],
        id="PRODUCT_CATALOG_SALES",
    ),
]


@pytest.mark.parametrize(("row_id", "fields", "expected"), ROW_CASES)
def test_default_tracking_specs_row(row_id: str, fields: dict[str, Any], expected: list[Any]):
    ad = make_ad(**fields)
    sampled = row_id == "POST_ENGAGEMENT/testing_dwell"
    resolved = resolve_ad(ad, include_sampled=sampled)
    assert [r.spec for r in resolved.tracking_specs] == specs(*expected)
    assert default_tracking_specs(ad, include_sampled=sampled) == specs(*expected)
    assert {r.source for r in resolved.tracking_specs} <= {f"default:{row_id}"}
    assert resolved.skipped == ()


def test_every_table_row_has_a_case():
    assert [c.values[0] for c in ROW_CASES] == [r.row_id for r in
                                                spec_tables.DEFAULT_TRACKING_ROWS]
    assert len(spec_tables.DEFAULT_TRACKING_ROWS) == 24


def test_dwell_row_is_not_a_default():
    ad = make_ad(objective="POST_ENGAGEMENT", optimization_goal="POST_ENGAGEMENT",
                 creative_type="PAGE_POST_VIDEO")
    assert default_tracking_specs(ad) == []


def test_mobile_app_rows_note_that_app_specs_are_explicit():
    ad = make_ad(objective="MOBILE_APP_INSTALLS", optimization_goal="APP_INSTALLS",
                 creative_type="MOBILE_APP_INSTALL", promoted_object={"application_id": APP})
    notes = resolve_ad(ad).notes
    assert any("app_custom_event" in n and "mobile_app_install" in n for n in notes)
    assert {"action.type": ("mobile_app_install",), "application": (APP,)} not in \
        resolve_tracking_specs(ad)


def test_missing_id_leaves_the_spec_out_and_says_so():
    ad = make_ad(objective="CONVERSIONS", optimization_goal="LINK_CLICKS",
                 creative_type="PAGE_POST_LINK", promoted_object=PIXEL_PURCHASE, creative={})
    resolved = resolve_ad(ad)
    assert [r.spec for r in resolved.tracking_specs] == specs(OFFSITE, PAGE_LIKE)
    assert [(s.source, s.missing) for s in resolved.skipped] == [
        ("default:CONVERSIONS/page_post/other_goal", ("POST_ID",)),
        ("goal:LINK_CLICKS/page_post_link", ("POST_ID",)),
    ]
    assert resolved.conversion_spec is None


def test_creative_dependent_rows_need_a_creative_type():
    ad = make_ad(objective="CONVERSIONS", optimization_goal="OFFSITE_CONVERSIONS",
                 creative_type=None, promoted_object=PIXEL_PURCHASE)
    resolved = resolve_ad(ad)
    assert resolved.tracking_specs == ()
    assert any("no creative_type" in n for n in resolved.notes)


def test_creative_ids_from_post_id_and_page_id():
    ad = make_ad(objective="LINK_CLICKS", creative_type="PHOTO",
                 creative={"page_id": int(PAGE), "post_id": int(POST)})
    assert default_tracking_specs(ad) == specs(POST_ENGAGEMENT)


# --- meta specs ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("meta", "expected", "matching", "not_matching"),
    [
        pytest.param(
            {"action.type": ["app_engagement"], "application": [APP]},
            {"app_engagement", "app_story", "app_use", "app_install", "credit_spent"},
            {"action.type": "credit_spent", "application": APP},
            {"action.type": "app_custom_event", "application": APP},
            id="app_engagement",
        ),
        pytest.param(
            {"action.type": ["page_engagement"], "page": [PAGE]},
            {"page_engagement", "checkin", "comment", "follow", "like", "mention", "post",
             "vote", "link_click", "photo_view", "video_play"},
            {"action.type": "checkin", "page": PAGE},
            {"action.type": "checkin", "page": "999"},
            id="page_engagement",
        ),
        pytest.param(
            {"action.type": ["post_engagement"], "post": [POST], "page": [PAGE]},
            {"post_engagement", "comment", "follow", "like", "post", "vote", "receive_offer",
             "link_click", "photo_view", "video_play"},
            {"action.type": "comment", "post": POST, "page": PAGE},
            {"action.type": "offsite_conversion", "post": POST, "page": PAGE},
            id="post_engagement",
        ),
    ],
)
def test_meta_spec(meta: dict[str, Any], expected: set[str], matching: dict[str, str],
                   not_matching: dict[str, str]):
    assert expand_action_types(meta["action.type"]) == expected
    spec = normalize_spec(meta)
    assert spec_matches(spec, matching)
    assert not spec_matches(spec, not_matching)
    assert explain_match(spec, matching) == []
    assert explain_match(spec, not_matching)


def test_meta_spec_name_itself_matches_and_plain_types_do_not_expand():
    spec = normalize_spec({"action.type": "post_engagement", "post": POST, "page": PAGE})
    assert spec_matches(spec, {"action.type": "post_engagement", "post": POST, "page": PAGE})
    assert expand_action_types(["like"]) == {"like"}


# --- notation, dotted keys ----------------------------------------------------
def test_string_and_array_notation_are_equal():
    string = normalize_spec({"action.type": "like", "page": int(PAGE)})
    array = normalize_spec({"action.type": ["like"], "page": [PAGE]})
    assert string == array == {"action.type": ("like",), "page": (PAGE,)}
    action = {"action.type": "like", "page": PAGE}
    assert spec_matches(string, action) and spec_matches(array, action)


def test_seed_pixel_tracking_example_with_integer_ids():
    ad = make_ad(objective="REACH", optimization_goal="REACH", tracking_specs=[
        {"action.type": "offsite_conversion", "fb_pixel": 1},
        {"action.type": "offsite_conversion", "fb_pixel": 2},
        {"action.type": "offsite_conversion", "fb_pixel": 3},
    ])
    assert [s["fb_pixel"] for s in resolve_tracking_specs(ad)] == [("1",), ("2",), ("3",)]
    assert match_ad(ad, conversion_actions(2, "Purchase")).tracking_specs == [1]


def test_values_are_deduplicated_and_sorted():
    assert normalize_spec({"action.type": ["b", "a", "b"]}) == {"action.type": ("a", "b")}


@pytest.mark.parametrize(
    ("spec", "action", "matches"),
    [
        ({"action.type": "comment", "post.wall": PAGE},
         {"action.type": "comment", "post.wall": PAGE}, True),
        ({"action.type": "comment", "post.wall": PAGE},
         {"action.type": "comment", "post": PAGE}, False),
        ({"action.type": "comment", "post": POST, "post.wall": PAGE},
         {"action.type": "comment", "post": POST, "post.wall": PAGE}, True),
        ({"action.type": "checkin", "page.parent": PAGE},
         {"action.type": "checkin", "page.parent": PAGE}, True),
        ({"action.type": "tab_view", "page.tab.name": "shop", "page": PAGE},
         {"action.type": "tab_view", "page.tab.name": "reviews", "page": PAGE}, False),
        ({"action.type": ["link_click"], "object.domain": ["shop.example"]},
         {"action.type": "link_click", "object.domain": "shop.example"}, True),
        ({"action.type": "offsite_conversion", "fb_pixel": PIXEL},
         {"action.type": "offsite_conversion", "fb_pixel": PIXEL,
          "offsite_conversion.event": "Lead"}, True),
    ],
    ids=["post.wall", "post.wall-is-not-post", "post+post.wall", "page.parent",
         "page.tab.name-value", "object.domain", "extra-action-keys-ignored"],
)
def test_dotted_keys(spec: dict[str, Any], action: dict[str, str], matches: bool):
    assert spec_matches(normalize_spec(spec), action) is matches


def test_explain_match_names_missing_key_and_wrong_value():
    spec = normalize_spec({"action.type": "offsite_conversion", "fb_pixel": PIXEL,
                           "offsite_conversion.event": "Purchase"})
    reasons = explain_match(spec, {"action.type": "offsite_conversion", "fb_pixel": "999"})
    assert reasons == [
        "\"fb_pixel\": '999' is not among ['111']",
        "\"offsite_conversion.event\" missing from the action (spec wants one of ['Purchase'])",
    ]


# --- add vs overwrite ---------------------------------------------------------
CUSTOM = {"action.type": "offsite_conversion", "fb_pixel": "999"}


@pytest.mark.parametrize(
    ("fields", "with_custom", "without_custom"),
    [
        pytest.param(
            {"objective": "APP_INSTALLS", "optimization_goal": "APP_INSTALLS",
             "creative_type": "MOBILE_APP_INSTALL", "promoted_object": {"application_id": APP}},
            [CUSTOM], [POST_ENGAGEMENT], id="APP_INSTALLS-replaces",
        ),
        pytest.param(
            {"objective": "OUTCOME_ENGAGEMENT", "optimization_goal": "IMPRESSIONS",
             "creative_type": "PAGE_POST_PHOTO"},
            [CUSTOM], [POST_ENGAGEMENT], id="OUTCOME_ENGAGEMENT-replaces",
        ),
        pytest.param(
            {"objective": "CONVERSIONS", "optimization_goal": "OFFSITE_CONVERSIONS",
             "creative_type": "PAGE_POST_LINK", "promoted_object": PIXEL_PURCHASE},
            [POST_ENGAGEMENT, PAGE_LIKE, CUSTOM], [POST_ENGAGEMENT, PAGE_LIKE],
            id="CONVERSIONS-adds",
        ),
        pytest.param(
            {"objective": "MOBILE_APP_INSTALLS", "optimization_goal": "APP_INSTALLS",
             "creative_type": "MOBILE_APP_INSTALL", "promoted_object": {"application_id": APP}},
            [POST_ENGAGEMENT, CUSTOM], [POST_ENGAGEMENT], id="MOBILE_APP_INSTALLS-adds",
        ),
    ],
)
def test_custom_specs_add_or_replace(fields: dict[str, Any], with_custom: list[Any],
                                     without_custom: list[Any]):
    assert resolve_tracking_specs(make_ad(**fields, tracking_specs=[CUSTOM])) == \
        specs(*with_custom)
    assert resolve_tracking_specs(make_ad(**fields)) == specs(*without_custom)


def test_custom_spec_equal_to_a_default_is_not_repeated():
    ad = make_ad(objective="LINK_CLICKS", creative_type="PAGE_POST_LINK",
                 tracking_specs=[{"action.type": ["post_engagement"], "post": [int(POST)],
                                  "page": PAGE}])
    resolved = resolve_ad(ad)
    assert [r.source for r in resolved.tracking_specs] == ["default:LINK_CLICKS/page_post"]


# --- objectives outside the table ---------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"objective": "OUTCOME_SALES", "promoted_object": PIXEL_PURCHASE,
          "optimization_goal": "OFFSITE_CONVERSIONS"}, "CONVERSIONS"),
        ({"objective": "OUTCOME_SALES", "optimization_goal": "OFFSITE_CONVERSIONS",
          "promoted_object": {**PIXEL_PURCHASE, "product_set_id": "7"}},
         "PRODUCT_CATALOG_SALES"),
        ({"objective": "OUTCOME_LEADS"}, "CONVERSIONS"),
        ({"objective": "OUTCOME_TRAFFIC"}, "LINK_CLICKS"),
        ({"objective": "OUTCOME_ENGAGEMENT", "optimization_goal": "PAGE_LIKES"}, "PAGE_LIKES"),
        ({"objective": "OUTCOME_ENGAGEMENT", "optimization_goal": "EVENT_RESPONSES"},
         "EVENT_RESPONSES"),
        ({"objective": "OUTCOME_ENGAGEMENT", "optimization_goal": "THRUPLAY"},
         "POST_ENGAGEMENT"),
        ({"objective": "app_installs", "promoted_object": {"application_id": APP}},
         "MOBILE_APP_INSTALLS"),
        ({"objective": "OUTCOME_AWARENESS"}, None),
        ({"objective": "CONVERSIONS"}, "CONVERSIONS"),
    ],
)
def test_table_objective(fields: dict[str, Any], expected: str | None):
    assert table_objective(make_ad(**fields)) == expected


def test_unknown_objective_has_no_defaults():
    resolved = resolve_ad(make_ad(objective="OUTCOME_AWARENESS", optimization_goal="REACH"))
    assert resolved.tracking_specs == ()
    assert "objective OUTCOME_AWARENESS: no default tracking specs in Meta's table" in \
        resolved.notes


def test_outcome_sales_uses_conversions_rows():
    ad = make_ad(objective="OUTCOME_SALES", optimization_goal="VALUE",
                 creative_type="PAGE_POST_PHOTO", promoted_object=PIXEL_PURCHASE)
    assert resolve_tracking_specs(ad) == specs(OFFSITE, POST_ENGAGEMENT, PAGE_LIKE)


# --- conversion spec ----------------------------------------------------------
EVENT_TYPES = [
    ("PURCHASE", "Purchase"), ("LEAD", "Lead"),
    ("COMPLETE_REGISTRATION", "CompleteRegistration"), ("ADD_TO_CART", "AddToCart"),
    ("ADD_PAYMENT_INFO", "AddPaymentInfo"), ("ADD_TO_WISHLIST", "AddToWishlist"),
    ("CONTACT", "Contact"), ("CUSTOMIZE_PRODUCT", "CustomizeProduct"), ("DONATE", "Donate"),
    ("FIND_LOCATION", "FindLocation"), ("INITIATED_CHECKOUT", "InitiateCheckout"),
    ("INITIATE_CHECKOUT", "InitiateCheckout"), ("SCHEDULE", "Schedule"),
    ("SEARCH", "Search"), ("START_TRIAL", "StartTrial"),
    ("SUBMIT_APPLICATION", "SubmitApplication"), ("SUBSCRIBE", "Subscribe"),
    ("CONTENT_VIEW", "ViewContent"),
]


def pixel_ad(event_type: str | None = "PURCHASE", **promoted: Any) -> dict[str, Any]:
    po: dict[str, Any] = {"pixel_id": PIXEL, **promoted}
    if event_type is not None:
        po["custom_event_type"] = event_type
    return make_ad(objective="OUTCOME_SALES", optimization_goal="OFFSITE_CONVERSIONS",
                   promoted_object=po)


@pytest.mark.parametrize(("event_type", "event_name"), EVENT_TYPES, ids=[e for e, _ in EVENT_TYPES])
def test_conversion_spec_maps_custom_event_type(event_type: str, event_name: str):
    assert conversion_spec(pixel_ad(event_type)) == {
        "action.type": ("offsite_conversion",),
        "fb_pixel": (PIXEL,),
        "offsite_conversion.event": (event_name,),
    }


def test_every_mapped_event_type_is_tested():
    assert {e for e, _ in EVENT_TYPES} == set(spec_tables.CUSTOM_EVENT_TYPE_EVENTS)


def test_custom_event_type_is_case_insensitive():
    assert conversion_spec(pixel_ad("purchase")) == conversion_spec(pixel_ad("PURCHASE"))


def test_other_uses_custom_event_str():
    spec = conversion_spec(pixel_ad("OTHER", custom_event_str="DemoBooked"))
    assert spec is not None and spec["offsite_conversion.event"] == ("DemoBooked",)


def test_other_without_custom_event_str_has_no_conversion_spec():
    resolved = resolve_ad(pixel_ad("OTHER", custom_conversion_id="888"))
    assert resolved.conversion_spec is None
    assert any("custom_event_type OTHER" in n for n in resolved.notes)


def test_value_goal_is_a_pixel_goal():
    ad = make_ad(objective="OUTCOME_SALES", optimization_goal="VALUE",
                 promoted_object=PIXEL_PURCHASE)
    assert conversion_spec(ad) == normalize_spec(
        {**OFFSITE, "offsite_conversion.event": "Purchase"})


def test_app_events_optimization_uses_the_app_spec():
    ad = make_ad(objective="OUTCOME_APP_PROMOTION", optimization_goal="OFFSITE_CONVERSIONS",
                 promoted_object={"application_id": APP, "custom_event_type": "PURCHASE"})
    assert conversion_spec(ad) == normalize_spec(
        {"action.type": "app_custom_event", "application": APP})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"optimization_goal": "LINK_CLICKS", "creative_type": "DOMAIN"},
         {"action.type": "link_click", "object": PAGE}),
        ({"optimization_goal": "LINK_CLICKS", "creative_type": "PAGE_POST_LINK"},
         {"action.type": ["link_click"], "post": [POST], "post.wall": [PAGE]}),
        ({"optimization_goal": "PAGE_LIKES", "creative_type": "PAGE_LIKE"},
         {"action.type": "like", "page": PAGE}),
        ({"optimization_goal": "POST_ENGAGEMENT", "creative_type": "PAGE_POST_PHOTO"},
         {"action.type": "post_engagement", "post": POST, "page": PAGE}),
        ({"optimization_goal": "EVENT_RESPONSES", "creative_type": "EVENT",
          "promoted_object": {"event_id": EVENT}},
         {"action.type": "rsvp", "response": "yes", "event": EVENT}),
        ({"optimization_goal": "OFFER_CLAIMS", "creative_type": "PAGE_POST_OFFER",
          "promoted_object": {"offer_id": OFFER}},
         {"action.type": "receive_offer", "offer": OFFER, "offer.creator": PAGE}),
        ({"optimization_goal": "APP_INSTALLS", "creative_type": "MOBILE_APP_INSTALL",
          "promoted_object": {"application_id": APP}},
         {"action.type": ["app_install", "mobile_app_install"], "application": APP}),
        ({"optimization_goal": "IMPRESSIONS"}, None),
        ({"optimization_goal": "LINK_CLICKS", "creative_type": "PAGE_POST_PHOTO"}, None),
        ({"optimization_goal": None}, None),
    ],
    ids=["link_clicks-domain", "link_clicks-page_post_link", "page_likes", "post_engagement",
         "event_responses", "offer_claims", "app_installs", "impressions",
         "link_clicks-photo", "no-goal"],
)
def test_conversion_spec_by_goal(fields: dict[str, Any], expected: dict[str, Any] | None):
    want = normalize_spec(expected) if expected is not None else None
    assert conversion_spec(make_ad(objective="NONE", **fields)) == want


def test_conversion_specs_given_in_the_ad_are_ignored():
    ad = pixel_ad("LEAD", page_id=PAGE)
    ad["conversion_specs"] = [{"action.type": "offsite_conversion", "fb_pixel": PIXEL,
                               "offsite_conversion.event": "Purchase"}]
    spec = conversion_spec(ad)
    assert spec is not None and spec["offsite_conversion.event"] == ("Lead",)


# --- conversions as actions, matching -----------------------------------------
def test_conversion_actions_website_purchase():
    assert conversion_actions(int(PIXEL), "Purchase", "website", False) == [
        {"action.type": "offsite_conversion", "fb_pixel": PIXEL,
         "offsite_conversion.event": "Purchase"},
    ]


def test_purchase_matches_purchase_ad_not_lead_ad():
    purchase = conversion_actions(PIXEL, "Purchase", "website")
    assert match_ad(pixel_ad("PURCHASE"), purchase).conversion_spec is True
    assert match_ad(pixel_ad("LEAD"), purchase).conversion_spec is False
    assert match_ad(pixel_ad("PURCHASE"), conversion_actions("999", "Purchase")) \
        .conversion_spec is False


def test_match_reports_tracking_spec_indexes():
    ad = make_ad(objective="CONVERSIONS", optimization_goal="LINK_CLICKS",
                 creative_type="PAGE_POST_LINK", promoted_object=PIXEL_PURCHASE,
                 tracking_specs=[CUSTOM, {"action.type": "offsite_conversion",
                                          "fb_pixel": PIXEL,
                                          "offsite_conversion.event": "Purchase"}])
    match = match_ad(ad, conversion_actions(PIXEL, "Purchase", "website"))
    assert match.tracking_specs == [0, 4]
    assert match.conversion_spec is False  # LINK_CLICKS: the link_click spec
    assert match.as_dict() == {"ad_id": "23851", "conversion_spec": False,
                               "tracking_specs": [0, 4]}
    lead = match_ad(ad, conversion_actions(PIXEL, "Lead", "website"))
    assert lead.tracking_specs == [0]


def test_match_accepts_a_resolved_ad():
    resolved = resolve_ad(pixel_ad("PURCHASE"))
    assert match_ad(resolved, conversion_actions(PIXEL, "Purchase")).conversion_spec


@pytest.mark.parametrize(
    ("action_source", "has_lead_id", "types"),
    [
        ("system_generated", True, ["offsite_conversion", "leadgen_quality_conversion"]),
        ("system_generated", False, ["offsite_conversion"]),
        ("website", True, ["offsite_conversion"]),
        (None, False, ["offsite_conversion"]),
    ],
)
def test_crm_lead_events_are_leadgen_quality_conversions(
    action_source: str | None, has_lead_id: bool, types: list[str]
):
    actions = conversion_actions(PIXEL, "Qualified", action_source, has_lead_id)
    assert [a["action.type"] for a in actions] == types


def test_leadgen_quality_conversion_action_and_specs():
    crm = conversion_actions(PIXEL, "Qualified", "system_generated", True)
    assert crm[1] == {"action.type": "leadgen_quality_conversion", "fb_pixel": PIXEL,
                      "dataset": PIXEL}
    by_pixel = {"action.type": "leadgen_quality_conversion", "fb_pixel": PIXEL}
    by_dataset = {"action.type": "leadgen_quality_conversion", "dataset": PIXEL}
    ad = make_ad(objective="OUTCOME_LEADS", optimization_goal="LEAD_GENERATION",
                 creative_type=None, tracking_specs=[by_pixel, by_dataset])
    assert match_ad(ad, crm).tracking_specs == [0, 1]
    website = conversion_actions(PIXEL, "Lead", "website", True)
    assert match_ad(ad, website).tracking_specs == []
    assert conversion_spec(ad) is None


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"pixel_id": PIXEL, "event_name": "Lead", "action_source": "system_generated",
          "user_data": {"lead_id": "123"}},
         conversion_actions(PIXEL, "Lead", "system_generated", True)),
        ({"pixel_id": PIXEL, "event_name": "Lead", "action_source": "system_generated",
          "user_data": {"em": ["a" * 64]}},
         conversion_actions(PIXEL, "Lead")),
        ({"action.type": "like", "page": int(PAGE)}, [{"action.type": "like", "page": PAGE}]),
        ([{"action.type": "like", "page": PAGE}], [{"action.type": "like", "page": PAGE}]),
    ],
    ids=["crm-record", "record-without-lead-id", "one-action", "action-list"],
)
def test_actions_from_event(event: Any, expected: list[Any]):
    assert actions_from_event(event) == expected


def test_explain_says_which_match_and_why_not():
    ad = pixel_ad("PURCHASE")
    report = explain(ad, {"pixel_id": PIXEL, "event_name": "Lead"})
    assert report["match"] == {"ad_id": "23851", "conversion_spec": False,
                               "tracking_specs": []}
    conv = report["conversion_spec"]
    assert isinstance(conv, dict) and conv["matched"] is False
    assert conv["why_not"] == [{"action": 0, "reasons": [
        "\"offsite_conversion.event\": 'Lead' is not among ['Purchase']"]}]
    json.dumps(report)
    lines = explain_lines(ad, {"pixel_id": PIXEL, "event_name": "Purchase"})
    assert lines[0] == "ad 23851: tracking_specs [] matched, conversion_spec matched"
    assert any("conversion_spec" in line and "MATCH" in line for line in lines)


def test_resolve_is_json_ready():
    ad = make_ad(objective="CONVERSIONS", optimization_goal="OFFSITE_CONVERSIONS",
                 creative_type="PAGE_POST_LINK", promoted_object=PIXEL_PURCHASE)
    out = resolve(ad)
    assert json.loads(json.dumps(out)) == out
    assert out["tracking_specs"] == [
        {"action.type": ["post_engagement"], "post": [POST], "page": [PAGE]},
        {"action.type": ["like"], "page": [PAGE]},
    ]
    assert out["conversion_spec"] == {"action.type": ["offsite_conversion"],
                                      "fb_pixel": [PIXEL],
                                      "offsite_conversion.event": ["Purchase"]}
    assert out["bid_type"] == "oCPM"
    assert out["custom_specs_rule"] == "add"


@pytest.mark.parametrize(
    ("billing", "goal", "expected"),
    [("IMPRESSIONS", "IMPRESSIONS", "CPM"), ("CLICKS", "CLICKS", "CPC"),
     ("IMPRESSIONS", "LINK_CLICKS", "oCPM"), ("LINK_CLICKS", "LINK_CLICKS", "CPA"),
     ("IMPRESSIONS", "REACH", None)],
)
def test_bid_type(billing: str, goal: str, expected: str | None):
    assert bid_type(make_ad(billing_event=billing, optimization_goal=goal)) == expected


# --- malformed input ----------------------------------------------------------
def _without(key: str) -> dict[str, Any]:
    ad = make_ad()
    del ad[key]
    return ad


@pytest.mark.parametrize(
    ("ad", "path"),
    [
        pytest.param(["not", "an", "ad"], "$", id="not-an-object"),
        pytest.param(_without("ad_id"), "ad_id", id="no-ad_id"),
        pytest.param(_without("objective"), "objective", id="no-objective"),
        pytest.param(make_ad(objective=5), "objective", id="objective-not-a-string"),
        pytest.param(make_ad(creative_type="CAROUSEL"), "creative_type", id="creative_type"),
        pytest.param(make_ad(promoted_object="111"), "promoted_object", id="promoted_object"),
        pytest.param(make_ad(promoted_object={"pixel_id": "px-1"}), "promoted_object.pixel_id",
                     id="pixel_id-not-numeric"),
        pytest.param(make_ad(promoted_object={"pixel_id": True}), "promoted_object.pixel_id",
                     id="pixel_id-bool"),
        pytest.param(make_ad(optimization_goal="OFFSITE_CONVERSIONS", promoted_object={}),
                     "promoted_object.pixel_id", id="pixel-goal-without-pixel"),
        pytest.param(make_ad(optimization_goal="OFFSITE_CONVERSIONS",
                             promoted_object={"pixel_id": PIXEL}),
                     "promoted_object.custom_event_type", id="pixel-without-event-type"),
        pytest.param(make_ad(optimization_goal="OFFSITE_CONVERSIONS",
                             promoted_object={"pixel_id": PIXEL,
                                              "custom_event_type": "LEVEL_ACHIEVED"}),
                     "promoted_object.custom_event_type", id="not-a-pixel-event-type"),
        pytest.param(make_ad(optimization_goal="APP_INSTALLS"),
                     "promoted_object.application_id", id="app-goal-without-app"),
        pytest.param(make_ad(creative={"object_story_id": f"999_{POST}"}),
                     "creative.object_story_id", id="creative-promotes-another-page"),
        pytest.param(make_ad(creative={"object_story_id": "333"}),
                     "creative.object_story_id", id="object_story_id-format"),
        pytest.param(make_ad(tracking_specs={"action.type": "like"}), "tracking_specs",
                     id="tracking_specs-not-a-list"),
        pytest.param(make_ad(tracking_specs=[CUSTOM, "like"]), "tracking_specs[1]",
                     id="spec-not-an-object"),
        pytest.param(make_ad(tracking_specs=[{}]), "tracking_specs[0]", id="spec-empty"),
        pytest.param(make_ad(tracking_specs=[{"action.type": {"action.type": "like"}}]),
                     'tracking_specs[0]["action.type"]', id="seed-garbled-nested-spec"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "page": []}]),
                     'tracking_specs[0]["page"]', id="empty-list"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "page": True}]),
                     'tracking_specs[0]["page"]', id="bool-value"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "page": 2.5}]),
                     'tracking_specs[0]["page"]', id="float-value"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "page": [PAGE, [PAGE]]}]),
                     'tracking_specs[0]["page"][1]', id="nested-list"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "page": " "}]),
                     'tracking_specs[0]["page"]', id="blank-value"),
        pytest.param(make_ad(tracking_specs=[{"page": PAGE}]),
                     'tracking_specs[0]["action.type"]', id="no-action.type"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "": PAGE}]),
                     "tracking_specs[0]", id="empty-key"),
        pytest.param(make_ad(tracking_specs=[{"action.type": "like", "post..wall": PAGE}]),
                     'tracking_specs[0]["post..wall"]', id="bad-dotted-key"),
    ],
)
def test_malformed_ad_raises_with_path(ad: Any, path: str):
    with pytest.raises(SpecError) as err:
        resolve(ad)
    assert err.value.path == path
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda: normalize_spec("like"), "$"),
        (lambda: normalize_action({"page": PAGE}), '$["action.type"]'),
        (lambda: conversion_actions("px", "Purchase"), "pixel_id"),
        (lambda: conversion_actions(PIXEL, ""), "event_name"),
        (lambda: actions_from_event({"event_name": "Purchase"}), "$"),
        (lambda: actions_from_event([{"action.type": "like"}, 3]), "[1]"),
        (lambda: match_ad(make_ad(), [{"page": PAGE}]), 'actions[0]["action.type"]'),
    ],
    ids=["spec-not-object", "action-without-type", "bad-pixel", "empty-event",
         "not-an-event", "bad-action-in-list", "bad-action-in-match"],
)
def test_malformed_specs_and_actions_raise_with_path(call: Any, path: str):
    with pytest.raises(SpecError) as err:
        call()
    assert err.value.path == path


# --- properties ---------------------------------------------------------------
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
_values = st.one_of(_words, st.integers(min_value=0, max_value=10**12))
_keys = st.lists(_words, min_size=1, max_size=3).map(".".join)
_spec_values = st.one_of(_values, st.lists(_values, min_size=1, max_size=4))
_specs = st.dictionaries(_keys, _spec_values, max_size=4).map(
    lambda d: {"action.type": "like", **d})


@given(_specs)
def test_normalize_is_idempotent_and_notation_free(raw: dict[str, Any]):
    spec = normalize_spec(raw)
    assert normalize_spec(spec) == spec
    as_arrays = {k: v if isinstance(v, list) else [v] for k, v in raw.items()}
    assert normalize_spec(as_arrays) == spec


@given(_specs, st.dictionaries(_keys, _values, max_size=5))
def test_matches_exactly_when_no_reason_against(raw: dict[str, Any], extra: dict[str, Any]):
    spec = normalize_spec(raw)
    action = normalize_action({**extra, "action.type": "like"})
    assert spec_matches(spec, action) is (explain_match(spec, action) == [])
    same = {key: values[0] for key, values in spec.items()}
    assert spec_matches(spec, {**action, **same})
