"""Browser hits (``events.pixel.raw``, SPEC §2.1) → canonical events.

A hit is what a first-party collector saw of one request to the pixel endpoint:
``query`` (raw query string or form body) or ``params`` (already split), plus
``received_at``, ``ip`` and ``user_agent``. The result is shaped like a CAPI server
event with ``action_source`` ``website``.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from streams import codes, query
from streams.capi import NOT_DECODED, decode_object
from streams.codes import Error
from streams.model import Parsed, RawEvent

MAX_PAST: Final = 7 * 86_400  # ts older than this before received_at is a lying clock
MAX_FUTURE: Final = 60
JSON_CUSTOM_KEYS: Final = frozenset({"content_ids", "contents"})
NON_CONVERSION_EVENTS: Final = frozenset({"Microdata"})
MAX_QUERY: Final = 64 * 1024


def _params(obj: dict[str, Any]) -> tuple[dict[str, str] | None, Error | None]:
    text, params = obj.get("query"), obj.get("params")
    if text is not None:
        if not isinstance(text, str):
            return None, Error(codes.INVALID_TYPE, "query", "query must be a string")
        if len(text) > MAX_QUERY:
            return None, Error(codes.MALFORMED_MESSAGE, "query", "query is longer than 64 KiB")
        return query.first_wins(text.lstrip("?")), None  # first occurrence wins
    if params is not None:
        if not isinstance(params, dict):
            return None, Error(codes.INVALID_TYPE, "params", "params must be an object")
        out: dict[str, str] = {}
        for k, v in params.items():
            if isinstance(v, str):
                out[k] = v
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = str(v)
            else:
                return None, Error(codes.INVALID_TYPE, f"params.{_safe_key(k)}", "must be a string")
        return out, None
    return None, Error(codes.MALFORMED_MESSAGE, "query", "a hit needs query or params")


def _safe_key(k: str) -> str:
    """A parameter name fit for an error field (bounded, no control characters)."""
    return "".join(c for c in k[:64] if c.isprintable())


def _event_time(ts: str | None, received_at: float) -> tuple[int, bool]:
    """(event_time, clock_skew): ts in ms when plausible, else received_at."""
    if ts is not None and ts.isascii() and ts.isdigit() and len(ts) <= 16:
        t = int(ts) // 1000
        if received_at - MAX_PAST <= t <= received_at + MAX_FUTURE:
            return t, False
    return int(received_at), True


# Limited Data Use as the pixel sends it (fbq('dataProcessingOptions', ['LDU'], 1, 1000)):
# the CAPI fields of the same meaning (SPEC §2.1).
LDU_PARAMS: Final = (
    ("dpoco", "data_processing_options_country"),
    ("dpost", "data_processing_options_state"),
)
_MAX_LDU_DIGITS: Final = 9


def _data_processing_options(params: dict[str, str], event: dict[str, Any]) -> None:
    """``dpo`` (comma-separated options), ``dpoco`` and ``dpost`` (integers) → the CAPI
    fields. A code that is not an integer is kept as text so validation rejects the hit
    (``invalid_type``) instead of sending it with less restriction than it asked for."""
    dpo = params.get("dpo")
    if dpo is not None:
        event["data_processing_options"] = [o for o in (x.strip() for x in dpo.split(",")) if o]
    for param, key in LDU_PARAMS:
        v = params.get(param)
        t = "" if v is None else v.strip()
        if not t:
            continue  # not given (or blank): Meta geolocates
        if t.isascii() and t.isdigit() and len(t) <= _MAX_LDU_DIGITS:
            event[key] = int(t)
        else:
            event[key] = t


def parse(value: bytes, decoded: object = NOT_DECODED) -> Parsed:
    obj, errors = decode_object(value, decoded)
    if obj is None:
        return Parsed(errors=errors)
    received_at = float(obj["received_at"])
    params, err = _params(obj)
    if err is not None or params is None:
        return Parsed(errors=[err] if err else [], received_at=received_at)
    pixel_id = params.get("id")
    out = Parsed(received_at=received_at, pixel_id=pixel_id)
    ev_name = params.get("ev")
    if ev_name in NON_CONVERSION_EVENTS:
        out.skipped = "microdata"
        return out
    if params.get("es") == "automatic":
        out.skipped = "automatic"
        return out

    event_time, skew = _event_time(params.get("ts"), received_at)
    user_data: dict[str, Any] = {}
    custom_data: dict[str, Any] = {}
    for k, v in params.items():
        if k.startswith("ud[") and k.endswith("]"):
            user_data[k[3:-1]] = v
        elif k.startswith("cd[") and k.endswith("]"):
            ck = k[3:-1]
            if ck in JSON_CUSTOM_KEYS:
                try:
                    custom_data[ck] = orjson.loads(v)
                except orjson.JSONDecodeError:
                    custom_data[ck] = v  # validation reports invalid_contents
            else:
                custom_data[ck] = v
    for k in ("fbp", "fbc"):
        if params.get(k):
            user_data[k] = params[k]
    ip, ua = obj.get("ip"), obj.get("user_agent")
    if isinstance(ip, str) and ip:
        user_data["client_ip_address"] = ip
    if isinstance(ua, str) and ua:
        user_data["client_user_agent"] = ua

    event: dict[str, Any] = {
        "event_name": ev_name or None,
        "event_time": event_time,
        "action_source": "website",
        "user_data": user_data,
        "custom_data": custom_data,
    }
    if params.get("eid"):
        event["event_id"] = params["eid"]
    if params.get("dl"):
        event["event_source_url"] = params["dl"]
    if params.get("rl"):
        event["referrer_url"] = params["rl"]
    _data_processing_options(params, event)
    raw = RawEvent(
        source="browser",
        index=None,
        pixel_id=pixel_id,
        received_at=received_at,
        event=event,
        warnings=[codes.CLIENT_CLOCK_SKEW] if skew else [],
    )
    out.events = [raw]
    return out
