"""SPEC §3: every rule as a value. ``check`` returns all errors of an event at once,
plus the event's fields in their normalized form; nothing here raises on data.

The reference time is the message's ``received_at``, never the wall clock, so a replay
gives the same result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pycountry

from streams import codes
from streams.codes import Error
from streams.model import RawEvent

ACTION_SOURCES: Final = frozenset(
    {
        "email", "website", "app", "phone_call", "chat", "physical_store",
        "system_generated", "business_messaging", "other",
    }
)  # fmt: skip
MAX_AGE: Final = 7 * 86_400
MAX_AGE_PHYSICAL_STORE: Final = 62 * 86_400
MAX_FUTURE: Final = 60
MS_THRESHOLD: Final = 10**12  # a 13-digit event_time is milliseconds
CURRENCIES: Final = frozenset(c.alpha_3 for c in pycountry.currencies)
_PIXEL_RE: Final = re.compile(r"[0-9]{1,20}")
_GOOD_PIXEL_IDS: Final[set[str]] = set()  # ids that matched _PIXEL_RE (memo, bounded)
_GOOD_PIXEL_IDS_MAX: Final = 1024

# Meta rejects events whose only match keys fall inside one of these sets.
WEAK_KEY_SETS: Final = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


@dataclass(slots=True, init=False)
class Checked:
    """The outcome of validation: errors (empty when valid) and normalized fields.
    (A written ``__init__``: see streams/model.py.)"""

    errors: list[Error]
    warnings: list[str]
    pixel_id: str | None
    event_name: str | None
    event_time: int | None
    event_id: str | None
    action_source: str | None
    event_source_url: str | None
    custom_data: dict[str, Any]

    def __init__(self) -> None:
        self.errors = []
        self.warnings = []
        self.pixel_id = None
        self.event_name = None
        self.event_time = None
        self.event_id = None
        self.action_source = None
        self.event_source_url = None
        self.custom_data = {}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def pixel_id(
    raw: Any, field_name: str, allowlist: frozenset[str] | None
) -> tuple[str | None, list[Error]]:
    """A pixel id: 1-20 digits, as a string (JSON integers accepted)."""
    if raw is None or raw == "":
        return None, [Error(codes.MISSING_FIELD, field_name, "the pixel id is missing")]
    if _is_int(raw) and raw >= 0:
        raw = str(raw)
    if not isinstance(raw, str):
        return None, [Error(codes.INVALID_TYPE, field_name, "the pixel id must be a string")]
    if raw not in _GOOD_PIXEL_IDS:
        if not _PIXEL_RE.fullmatch(raw):
            return None, [Error(codes.INVALID_PIXEL_ID, field_name, "a pixel id is 1 to 20 digits")]
        if len(_GOOD_PIXEL_IDS) < _GOOD_PIXEL_IDS_MAX:  # a deployment has a handful
            _GOOD_PIXEL_IDS.add(raw)
    if allowlist is not None and raw not in allowlist:
        return raw, [Error(codes.UNKNOWN_PIXEL, field_name, "pixel is not on the allow-list")]
    return raw, []


def _event_time(ev: Mapping[str, Any], raw: RawEvent, c: Checked, action_source: Any) -> None:
    t = ev.get("event_time")
    if t is None:
        c.errors.append(Error(codes.MISSING_FIELD, "event_time", "event_time is required"))
        return
    if not _is_number(t) or not math.isfinite(t):
        c.errors.append(Error(codes.INVALID_TYPE, "event_time", "event_time must be Unix seconds"))
        return
    t = int(t)
    if raw.source == "server" and t >= MS_THRESHOLD:
        t //= 1000
        c.warnings.append(codes.EVENT_TIME_IN_MS)
    max_age = MAX_AGE_PHYSICAL_STORE if action_source == "physical_store" else MAX_AGE
    if t < raw.received_at - max_age:
        days = max_age // 86_400
        c.errors.append(
            Error(
                codes.EVENT_TIME_TOO_OLD, "event_time", f"more than {days} days before received_at"
            )
        )
    elif t > raw.received_at + MAX_FUTURE:
        c.errors.append(
            Error(codes.EVENT_TIME_IN_FUTURE, "event_time", "more than 60 s after received_at")
        )
    c.event_time = t


def _string(ev: Mapping[str, Any], key: str, c: Checked, *, required: bool) -> str | None:
    v = ev.get(key)
    if v is None or v == "":
        if required:
            c.errors.append(Error(codes.MISSING_FIELD, key, f"{key} is required"))
        return None
    if key == "event_id" and _is_int(v):
        return str(v)  # integer event ids are common; CAPI treats them as strings
    if not isinstance(v, str):
        c.errors.append(Error(codes.INVALID_TYPE, key, f"{key} must be a string"))
        return None
    return v


def _value(v: Any) -> float | int | None:
    """A finite number >= 0; numeric strings converted. None when invalid."""
    if _is_number(v):
        num: float | int = v
    elif isinstance(v, str) and 0 < len(v) <= 64:
        try:
            num = float(v.strip())
        except ValueError:
            return None
        if num.is_integer() and "." not in v and "e" not in v.lower():
            num = int(num)
    else:
        return None
    if not math.isfinite(num) or num < 0:
        return None
    return num


def _custom_data(ev: Mapping[str, Any], event_name: str | None, c: Checked) -> None:
    cd = ev.get("custom_data")
    if cd is None:
        cd = {}
    if not isinstance(cd, dict):
        c.errors.append(Error(codes.INVALID_TYPE, "custom_data", "custom_data must be an object"))
        return
    out = dict(cd)
    purchase = event_name == "Purchase"
    value = cd.get("value")
    if value is None or value == "":
        out.pop("value", None)
        if purchase:
            c.errors.append(
                Error(codes.MISSING_VALUE, "custom_data.value", "Purchase events need a value")
            )
    else:
        num = _value(value)
        if num is None:
            c.errors.append(
                Error(
                    codes.INVALID_VALUE, "custom_data.value", "value must be a finite number >= 0"
                )
            )
        else:
            out["value"] = num
    currency = cd.get("currency")
    if currency is None or currency == "":
        out.pop("currency", None)
        if purchase:
            c.errors.append(
                Error(
                    codes.MISSING_CURRENCY,
                    "custom_data.currency",
                    "Purchase events need a currency",
                )
            )
    elif not isinstance(currency, str) or currency.strip().upper() not in CURRENCIES:
        c.errors.append(
            Error(
                codes.INVALID_CURRENCY, "custom_data.currency", "currency must be an ISO 4217 code"
            )
        )
    else:
        out["currency"] = currency.strip().upper()
    contents = cd.get("contents")
    if contents is not None:
        ids = (
            [_product_id(x.get("id")) if isinstance(x, dict) else None for x in contents]
            if isinstance(contents, list)
            else [None]
        )
        if None in ids or any(i == "" for i in ids):
            c.errors.append(
                Error(
                    codes.INVALID_CONTENTS,
                    "custom_data.contents",
                    "contents must be a list of objects, each with a string or number id",
                )
            )
        else:
            out["contents"] = [{**x, "id": i} for x, i in zip(contents, ids, strict=True)]
    content_ids = cd.get("content_ids")
    if content_ids is not None:
        items = content_ids if isinstance(content_ids, list) else [content_ids]
        strs = [_product_id(x) for x in items]
        if None in strs:
            c.errors.append(
                Error(
                    codes.INVALID_TYPE,
                    "custom_data.content_ids",
                    "content_ids must be a list of strings or numbers",
                )
            )
        else:
            out["content_ids"] = strs
    c.custom_data = out


def _product_id(v: Any) -> str | None:
    """A product id as CAPI wants it (SPEC §7): a string, numbers converted (``7`` and
    ``7.0`` → ``"7"``, ``1.5`` → ``"1.5"``). None for anything else (bool, null, objects)."""
    if isinstance(v, str):
        return v
    if _is_int(v):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return str(int(v)) if v.is_integer() else repr(v)
    return None


def match_keys(user_data: Mapping[str, Any]) -> frozenset[str]:
    """The user_data keys that carry a usable value after normalization (hash_user_data
    keeps no empty value)."""
    return frozenset(user_data)


_WEAK_KEYS: Final = frozenset().union(*WEAK_KEY_SETS)
# Limited Data Use codes: (event field, the pixel parameter it comes from)
_LDU_CODES: Final = (
    ("data_processing_options_country", "dpoco"),
    ("data_processing_options_state", "dpost"),
)


def customer_information(keys: frozenset[str]) -> Error | None:
    if not keys:
        return Error(
            codes.INSUFFICIENT_CUSTOMER_INFORMATION, "user_data", "no usable customer information"
        )
    if not keys <= _WEAK_KEYS:
        return None  # fast path: a key outside every weak set (em, ph, fbp, ...)
    if any(keys <= weak for weak in WEAK_KEY_SETS):
        return Error(
            codes.INSUFFICIENT_CUSTOMER_INFORMATION,
            "user_data",
            "only weak match keys: " + ",".join(sorted(keys)),
        )
    return None


def check(
    raw: RawEvent, hashed_user_data: Mapping[str, Any], allowlist: frozenset[str] | None
) -> Checked:
    """All SPEC §3 rules for one event whose user_data was already normalized and hashed."""
    c = Checked()
    ev = raw.event
    pid = raw.pixel_id
    if allowlist is None and type(pid) is str and pid in _GOOD_PIXEL_IDS:
        c.pixel_id = pid  # pixel_id()'s answer for a remembered id, without its tuple
    else:
        c.pixel_id, errs = pixel_id(pid, "id" if raw.source == "browser" else "pixel_id", allowlist)
        c.errors.extend(errs)
    c.event_name = _string(ev, "event_name", c, required=True)
    action_source = _string(ev, "action_source", c, required=True)
    if action_source is not None and action_source not in ACTION_SOURCES:
        c.errors.append(
            Error(codes.INVALID_ACTION_SOURCE, "action_source", "not one of CAPI's action sources")
        )
        action_source = None
    c.action_source = action_source
    _event_time(ev, raw, c, action_source)
    c.event_id = _string(ev, "event_id", c, required=False)
    c.event_source_url = _string(ev, "event_source_url", c, required=False)
    if raw.source == "server":
        ud = ev.get("user_data")
        if ud is None:
            c.errors.append(Error(codes.MISSING_FIELD, "user_data", "user_data is required"))
        elif not isinstance(ud, dict):
            c.errors.append(Error(codes.INVALID_TYPE, "user_data", "user_data must be an object"))
    if action_source == "website":
        if c.event_source_url is None and ev.get("event_source_url") in (None, ""):
            c.errors.append(
                Error(
                    codes.MISSING_EVENT_SOURCE_URL,
                    "event_source_url",
                    "website events need event_source_url",
                )
            )
        if not hashed_user_data.get("client_user_agent"):
            c.errors.append(
                Error(
                    codes.MISSING_CLIENT_USER_AGENT,
                    "user_data.client_user_agent",
                    "website events need client_user_agent",
                )
            )
    _custom_data(ev, c.event_name, c)
    for key in ("opt_out",):
        if ev.get(key) is not None and not isinstance(ev.get(key), bool):
            c.errors.append(Error(codes.INVALID_TYPE, key, f"{key} must be true or false"))
    dpo = ev.get("data_processing_options")
    if dpo is not None and not (isinstance(dpo, list) and all(isinstance(x, str) for x in dpo)):
        c.errors.append(
            Error(codes.INVALID_TYPE, "data_processing_options", "must be a list of strings")
        )
    for key, param in _LDU_CODES:
        v = ev.get(key)
        if v is not None and not _is_int(v):
            where = param if raw.source == "browser" else key
            c.errors.append(Error(codes.INVALID_TYPE, where, "must be an integer"))
    if raw.test_event_code is not None and not isinstance(raw.test_event_code, str):
        c.errors.append(Error(codes.INVALID_TYPE, "test_event_code", "must be a string"))
    if isinstance(ev.get("user_data"), dict):
        err = customer_information(match_keys(hashed_user_data))
        if err is not None:
            c.errors.append(err)
    return c
