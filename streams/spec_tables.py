"""Meta's tracking / conversion spec tables as data (SPEC §9; source: docs/specs.md).

Everything here is transcribed from Meta's "Tracking and Conversion Specs" page (the seed
document), except the items marked ``convstream choice``, which fill gaps the page leaves.
The logic that reads these tables lives in ``streams/specs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Placeholder:
    """An id a table row needs from the ad, e.g. ``PAGE_ID`` (filled by ``specs.py``)."""

    name: str


PAGE_ID: Final = Placeholder("PAGE_ID")
POST_ID: Final = Placeholder("POST_ID")
PIXEL_ID: Final = Placeholder("FACEBOOK_PIXEL_ID")
APPLICATION_ID: Final = Placeholder("APPLICATION_ID")
EVENT_ID: Final = Placeholder("EVENT_ID")
OFFER_ID: Final = Placeholder("OFFER_ID")
#: The pixel event name the promoted object's custom_event_type maps to.
EVENT_NAME: Final = Placeholder("EVENT_NAME")

TemplateValue = str | Placeholder
#: An action spec with placeholders: key -> allowed values.
Template = Mapping[str, tuple[TemplateValue, ...]]

# --- creative types (the ad's ``creative_type``) -----------------------------
# The seed names creatives in prose ("page post link and photo ads", "domain ads", ...);
# convstream gives each a name (convstream choice).
DOMAIN: Final = "DOMAIN"
PAGE_LIKE: Final = "PAGE_LIKE"
PAGE_POST_LINK: Final = "PAGE_POST_LINK"
PAGE_POST_PHOTO: Final = "PAGE_POST_PHOTO"
PAGE_POST_VIDEO: Final = "PAGE_POST_VIDEO"
PAGE_POST_STATUS: Final = "PAGE_POST_STATUS"
PAGE_POST_OFFER: Final = "PAGE_POST_OFFER"
EVENT: Final = "EVENT"
DYNAMIC_PRODUCT: Final = "DYNAMIC_PRODUCT"
MOBILE_APP_INSTALL: Final = "MOBILE_APP_INSTALL"
MOBILE_APP_ENGAGEMENT: Final = "MOBILE_APP_ENGAGEMENT"
CANVAS_APP_INSTALL: Final = "CANVAS_APP_INSTALL"
CANVAS_APP_ENGAGEMENT: Final = "CANVAS_APP_ENGAGEMENT"

PAGE_POSTS: Final = frozenset(
    {PAGE_POST_LINK, PAGE_POST_PHOTO, PAGE_POST_VIDEO, PAGE_POST_STATUS, PAGE_POST_OFFER}
)
CREATIVE_TYPES: Final = PAGE_POSTS | {
    DOMAIN,
    PAGE_LIKE,
    EVENT,
    DYNAMIC_PRODUCT,
    MOBILE_APP_INSTALL,
    MOBILE_APP_ENGAGEMENT,
    CANVAS_APP_INSTALL,
    CANVAS_APP_ENGAGEMENT,
}
#: Meta's AdCreative ``object_type`` values accepted as synonyms (convstream choice).
CREATIVE_TYPE_ALIASES: Final[Mapping[str, str]] = {
    "SHARE": PAGE_POST_LINK,
    "PHOTO": PAGE_POST_PHOTO,
    "VIDEO": PAGE_POST_VIDEO,
    "STATUS": PAGE_POST_STATUS,
    "OFFER": PAGE_POST_OFFER,
    "PAGE": PAGE_LIKE,
}


# --- default tracking specs ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class DefaultRow:
    """One row of the seed's "Default tracking specs" table.

    The row applies to an ad whose (table) objective is ``objective``, whose creative type
    is in ``creatives`` (``None``: any, the creative the objective implies), whose
    optimization goal equals ``goal_is`` / differs from ``goal_is_not`` (``None``: any),
    and, when ``requires_pixel``, whose promoted object names a pixel.
    """

    row_id: str
    objective: str
    creatives: frozenset[str] | None
    goal_is: str | None
    goal_is_not: str | None
    requires_pixel: bool
    specs: tuple[Template, ...]
    seed_creative: str
    note: str = ""
    #: Meta applies the row to "a small percentage" of ads only: never a default.
    sampled: bool = False


def _post_engagement() -> Template:
    return {"action.type": ("post_engagement",), "post": (POST_ID,), "page": (PAGE_ID,)}


def _page_like() -> Template:
    return {"action.type": ("like",), "page": (PAGE_ID,)}


def _link_click_object() -> Template:
    return {"action.type": ("link_click",), "object": (PAGE_ID,)}


def _offsite_conversion() -> Template:
    return {"action.type": ("offsite_conversion",), "fb_pixel": (PIXEL_ID,)}


def _app_engagement() -> Template:
    return {"action.type": ("app_engagement",), "application": (APPLICATION_ID,)}


def _rsvp(response: str) -> Template:
    return {"action.type": ("rsvp",), "response": (response,), "event": (EVENT_ID,)}


_APP_SPECS_NOTE: Final = (
    "Meta: tracking specs must be set explicitly with the app id "
    "(app_custom_event, mobile_app_install on 'application'); they are not defaults"
)
_OTHER_PAGE_POSTS: Final = frozenset({PAGE_POST_PHOTO, PAGE_POST_VIDEO, PAGE_POST_STATUS})

DEFAULT_TRACKING_ROWS: Final[tuple[DefaultRow, ...]] = (
    DefaultRow(
        "CANVAS_APP_ENGAGEMENT",
        "CANVAS_APP_ENGAGEMENT",
        None,
        "APP_INSTALLS",
        None,
        False,
        (_app_engagement(), _post_engagement()),
        "Canvas app engagement ads with optimization_goal=APP_INSTALLS",
    ),
    DefaultRow(
        "CANVAS_APP_INSTALLS",
        "CANVAS_APP_INSTALLS",
        None,
        None,
        "APP_INSTALLS",
        False,
        (_app_engagement(), _post_engagement()),
        "Canvas app install ads with optimization not set to APP_INSTALLS",
    ),
    DefaultRow(
        "CONVERSIONS/page_post/OFFSITE_CONVERSIONS",
        "CONVERSIONS",
        frozenset({PAGE_POST_LINK, PAGE_POST_PHOTO}),
        "OFFSITE_CONVERSIONS",
        None,
        True,
        (_post_engagement(), _page_like()),
        "Page post link and photo ads, pixel promoted object, "
        "optimization_goal=OFFSITE_CONVERSIONS",
    ),
    DefaultRow(
        "CONVERSIONS/page_post/other_goal",
        "CONVERSIONS",
        frozenset({PAGE_POST_LINK, PAGE_POST_PHOTO}),
        None,
        "OFFSITE_CONVERSIONS",
        False,
        (_offsite_conversion(), _post_engagement(), _page_like()),
        "Page post link and photo ads with optimization not set to OFFSITE_CONVERSIONS",
    ),
    DefaultRow(
        "CONVERSIONS/domain/OFFSITE_CONVERSIONS",
        "CONVERSIONS",
        frozenset({DOMAIN}),
        "OFFSITE_CONVERSIONS",
        None,
        True,
        (_link_click_object(), _page_like()),
        "Domain ads, pixel promoted object, optimization_goal=OFFSITE_CONVERSIONS",
    ),
    DefaultRow(
        "CONVERSIONS/domain/other_goal",
        "CONVERSIONS",
        frozenset({DOMAIN}),
        None,
        "OFFSITE_CONVERSIONS",
        False,
        (_offsite_conversion(), _link_click_object(), _page_like()),
        "Domain ads with optimization not set to OFFSITE_CONVERSIONS",
    ),
    DefaultRow(
        "EVENT_RESPONSES/other_goal",
        "EVENT_RESPONSES",
        None,
        None,
        "EVENT_RESPONSES",
        False,
        (_rsvp("yes"), _rsvp("maybe"), _rsvp("no")),
        "Event ads with optimization not set to EVENT_RESPONSES",
    ),
    DefaultRow(
        "EVENT_RESPONSES/EVENT_RESPONSES",
        "EVENT_RESPONSES",
        None,
        "EVENT_RESPONSES",
        None,
        False,
        (),
        "Event ads with optimization_goal=EVENT_RESPONSES",
        note="empty: the conversion spec covers the tracked actions",
    ),
    DefaultRow(
        "LINK_CLICKS/page_post",
        "LINK_CLICKS",
        frozenset({PAGE_POST_LINK, PAGE_POST_PHOTO}),
        None,
        None,
        False,
        (_post_engagement(),),
        "Page post link and photo ads with any bid option",
    ),
    DefaultRow(
        "LINK_CLICKS/domain/LINK_CLICKS",
        "LINK_CLICKS",
        frozenset({DOMAIN}),
        "LINK_CLICKS",
        None,
        False,
        (_page_like(),),
        "Domain ads with optimization_goal=LINK_CLICKS",
    ),
    DefaultRow(
        "LINK_CLICKS/domain/other_goal",
        "LINK_CLICKS",
        frozenset({DOMAIN}),
        None,
        "LINK_CLICKS",
        False,
        (_link_click_object(), _page_like()),
        "Domain ads with optimization not set to LINK_CLICKS",
    ),
    DefaultRow(
        "MOBILE_APP_ENGAGEMENT",
        "MOBILE_APP_ENGAGEMENT",
        None,
        None,
        None,
        False,
        (_post_engagement(),),
        "Mobile app engagement ads with any bid option",
        note=_APP_SPECS_NOTE,
    ),
    DefaultRow(
        "MOBILE_APP_INSTALLS",
        "MOBILE_APP_INSTALLS",
        None,
        None,
        None,
        False,
        (_post_engagement(),),
        "Mobile app install ads with any bid option",
        note=_APP_SPECS_NOTE,
    ),
    # NONE: "Any ad type - see default tracking specs by ad type". The seed's only
    # by-ad-type table is "Using conversion specs"; its rows are used here.
    DefaultRow(
        "NONE/domain",
        "NONE",
        frozenset({DOMAIN}),
        None,
        None,
        False,
        (_link_click_object(),),
        "Domain ad with social context",
    ),
    DefaultRow(
        "NONE/page_like",
        "NONE",
        frozenset({PAGE_LIKE}),
        None,
        None,
        False,
        (_page_like(),),
        "Page like ad",
    ),
    DefaultRow(
        "NONE/page_post_link",
        "NONE",
        frozenset({PAGE_POST_LINK}),
        None,
        None,
        False,
        ({"action.type": ("link_click",), "post": (POST_ID,), "post.wall": (PAGE_ID,)},),
        "Page post link ad",
    ),
    DefaultRow(
        "NONE/other_page_post",
        "NONE",
        _OTHER_PAGE_POSTS,
        None,
        None,
        False,
        (_post_engagement(),),
        "All other page post ads",
    ),
    DefaultRow(
        "NONE/event",
        "NONE",
        frozenset({EVENT}),
        None,
        None,
        False,
        (_rsvp("yes"),),
        "Event ad",
    ),
    DefaultRow(
        "NONE/offer",
        "NONE",
        frozenset({PAGE_POST_OFFER}),
        None,
        None,
        False,
        ({"action.type": ("receive_offer",), "offer": (OFFER_ID,), "offer.creator": (PAGE_ID,)},),
        "Offer ad",
    ),
    DefaultRow(
        "PAGE_LIKES",
        "PAGE_LIKES",
        PAGE_POSTS | {PAGE_LIKE},
        None,
        None,
        False,
        ({"action.type": ("page_engagement",), "page": (PAGE_ID,)},),
        "Page Like ads or page post ads with any bid option",
    ),
    DefaultRow(
        "POST_ENGAGEMENT/other_goal",
        "POST_ENGAGEMENT",
        PAGE_POSTS,
        None,
        "POST_ENGAGEMENT",
        False,
        (_post_engagement(),),
        "Page post ads with optimization not set to POST_ENGAGEMENT",
    ),
    DefaultRow(
        "POST_ENGAGEMENT/POST_ENGAGEMENT",
        "POST_ENGAGEMENT",
        PAGE_POSTS,
        "POST_ENGAGEMENT",
        None,
        False,
        (),
        "Page post ads with optimization_goal=POST_ENGAGEMENT",
        note="empty: the conversion spec covers the tracked actions",
    ),
    DefaultRow(
        "POST_ENGAGEMENT/testing_dwell",
        "POST_ENGAGEMENT",
        None,
        None,
        None,
        False,
        ({"action.type": ("dwell",), "post": (POST_ID,), "page": (PAGE_ID,)},),
        "any (testing)",
        note="dwell tracking on a small percentage of ads only; not a default",
        sampled=True,
    ),
    DefaultRow(
        "PRODUCT_CATALOG_SALES",
        "PRODUCT_CATALOG_SALES",
        None,
        None,
        None,
        False,
        ({"action.type": ("post_engagement",), "page": (PAGE_ID,), "post": (POST_ID,)},),
        "Dynamic Product Ads",
    ),
)

#: The seed's table objectives (the rows above), in table order.
TABLE_OBJECTIVES: Final = tuple(dict.fromkeys(row.objective for row in DEFAULT_TRACKING_ROWS))

#: "For APP_INSTALLS or OUTCOME_ENGAGEMENT objectives, Meta overwrites the default tracking
#: specs": custom specs replace the defaults instead of adding to them.
OVERWRITE_OBJECTIVES: Final = frozenset({"APP_INSTALLS", "OUTCOME_ENGAGEMENT"})

# --- objectives outside the table (convstream choice) --------------------------
#: Objective -> table objective, for current Meta objectives the seed's table predates.
#: OUTCOME_ENGAGEMENT and OUTCOME_SALES are refined in ``specs.table_objective``.
OBJECTIVE_ALIASES: Final[Mapping[str, str]] = {
    "WEBSITE_CONVERSIONS": "CONVERSIONS",
    "APP_INSTALLS": "MOBILE_APP_INSTALLS",
    "OUTCOME_APP_PROMOTION": "MOBILE_APP_INSTALLS",
    "OUTCOME_SALES": "CONVERSIONS",
    "OUTCOME_LEADS": "CONVERSIONS",
    "OUTCOME_TRAFFIC": "LINK_CLICKS",
    "OUTCOME_ENGAGEMENT": "POST_ENGAGEMENT",
}
#: OUTCOME_ENGAGEMENT with these goals uses that goal's legacy objective instead.
ENGAGEMENT_GOAL_OBJECTIVES: Final[Mapping[str, str]] = {
    "PAGE_LIKES": "PAGE_LIKES",
    "EVENT_RESPONSES": "EVENT_RESPONSES",
}

# --- meta specs ---------------------------------------------------------------
#: Meta spec -> the action types it covers. Both listings in the seed (the "Meta specs"
#: table and the one under "Using conversion specs") are merged: "share a post" is the
#: ``post`` action ("Sharing a story"), "answer a question" is ``vote``, "follow
#: question" is ``follow``, "page post like"/"page like" are ``like``, "claim offer" is
#: ``receive_offer``, "click a link" ``link_click``, "view a photo" ``photo_view``,
#: "play a video" ``video_play``.
META_SPECS: Final[Mapping[str, frozenset[str]]] = {
    "app_engagement": frozenset({"app_story", "app_use", "app_install", "credit_spent"}),
    "page_engagement": frozenset(
        {
            "checkin",
            "comment",
            "follow",
            "like",
            "mention",
            "post",
            "vote",
            "link_click",
            "photo_view",
            "video_play",
        }
    ),
    "post_engagement": frozenset(
        {
            "comment",
            "follow",
            "like",
            "post",
            "vote",
            "receive_offer",
            "link_click",
            "photo_view",
            "video_play",
        }
    ),
}

# --- conversion specs ---------------------------------------------------------
#: Goals whose conversion spec is the promoted pixel's offsite conversion. VALUE (value
#: optimization, same pixel + event) is a convstream choice; the seed names only
#: OFFSITE_CONVERSIONS.
PIXEL_GOALS: Final = frozenset({"OFFSITE_CONVERSIONS", "VALUE"})


@dataclass(frozen=True, slots=True)
class ConversionRow:
    """How a conversion spec follows from an optimization goal (and creative type)."""

    row_id: str
    goal: str
    creatives: frozenset[str] | None
    spec: Template
    seed_ad_type: str


CONVERSION_SPEC_ROWS: Final[tuple[ConversionRow, ...]] = (
    ConversionRow(
        "APP_INSTALLS",
        "APP_INSTALLS",
        None,
        {"action.type": ("app_install", "mobile_app_install"), "application": (APPLICATION_ID,)},
        "app_install (application)",
    ),
    ConversionRow(
        "LINK_CLICKS/domain",
        "LINK_CLICKS",
        frozenset({DOMAIN}),
        _link_click_object(),
        "Domain ad with social context",
    ),
    ConversionRow(
        "LINK_CLICKS/page_post_link",
        "LINK_CLICKS",
        frozenset({PAGE_POST_LINK}),
        {"action.type": ("link_click",), "post": (POST_ID,), "post.wall": (PAGE_ID,)},
        "Page post link ad",
    ),
    ConversionRow("PAGE_LIKES", "PAGE_LIKES", None, _page_like(), "Page like ad"),
    ConversionRow(
        "POST_ENGAGEMENT",
        "POST_ENGAGEMENT",
        None,
        _post_engagement(),
        "All other page post ads",
    ),
    ConversionRow("EVENT_RESPONSES", "EVENT_RESPONSES", None, _rsvp("yes"), "Event ad"),
    ConversionRow(
        "OFFER_CLAIMS",
        "OFFER_CLAIMS",
        None,
        {"action.type": ("receive_offer",), "offer": (OFFER_ID,), "offer.creator": (PAGE_ID,)},
        "Offer ad",
    ),
)

#: Pixel goal, pixel promoted object: the pixel's conversions of the promoted event.
PIXEL_CONVERSION_SPEC: Final[Template] = {
    "action.type": ("offsite_conversion",),
    "fb_pixel": (PIXEL_ID,),
    "offsite_conversion.event": (EVENT_NAME,),
}
#: Pixel goal, app promoted object (app events optimization): the seed's app spec.
APP_EVENT_CONVERSION_SPEC: Final[Template] = {
    "action.type": ("app_custom_event",),
    "application": (APPLICATION_ID,),
}

#: promoted_object.custom_event_type -> Meta Pixel standard event name. Not in the seed:
#: SPEC §9 gives the first four; the rest is the "Promoted Object custom_event_type value"
#: column of Meta's Pixel reference (INITIATE_CHECKOUT as printed there,
#: INITIATED_CHECKOUT as the Marketing API enum spells it; DONATE from the API enum).
#: OTHER maps to promoted_object.custom_event_str (see ``specs.conversion_spec``).
CUSTOM_EVENT_TYPE_EVENTS: Final[Mapping[str, str]] = {
    "PURCHASE": "Purchase",
    "LEAD": "Lead",
    "COMPLETE_REGISTRATION": "CompleteRegistration",
    "ADD_TO_CART": "AddToCart",
    "ADD_PAYMENT_INFO": "AddPaymentInfo",
    "ADD_TO_WISHLIST": "AddToWishlist",
    "CONTACT": "Contact",
    "CONTENT_VIEW": "ViewContent",
    "CUSTOMIZE_PRODUCT": "CustomizeProduct",
    "DONATE": "Donate",
    "FIND_LOCATION": "FindLocation",
    "INITIATED_CHECKOUT": "InitiateCheckout",
    "INITIATE_CHECKOUT": "InitiateCheckout",
    "SCHEDULE": "Schedule",
    "SEARCH": "Search",
    "START_TRIAL": "StartTrial",
    "SUBMIT_APPLICATION": "SubmitApplication",
    "SUBSCRIBE": "Subscribe",
}
OTHER_EVENT_TYPE: Final = "OTHER"

# --- conversions as actions (SPEC §9) -----------------------------------------
OFFSITE_CONVERSION: Final = "offsite_conversion"
LEADGEN_QUALITY_CONVERSION: Final = "leadgen_quality_conversion"
#: action_source of CRM events (with user_data.lead_id: a lead-ads lead).
CRM_ACTION_SOURCE: Final = "system_generated"
