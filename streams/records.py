"""Output records: the conversion (SPEC §7) and the dead letter (SPEC §4)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from streams.codes import Error
from streams.model import Origin, RawEvent
from streams.pii import sha256_hexdigest
from streams.validate import Checked

# Fields of a conversion that are convstream's own; removing them leaves a CAPI event.
CONVSTREAM_FIELDS = (
    "conversion_id",
    "pixel_id",
    "sources",
    "dedup",
    "match_quality",
    "warnings",
    "received_at",
    "emitted_at",
)


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def conversion_id(
    pixel_id: str, event_name: str | None, event_id: str | None, capi: dict[str, Any]
) -> str:
    """Stable id: the event_id dedup key, or the canonical JSON of the kept CAPI event."""
    if event_id:
        basis = f"{pixel_id}|{event_name}|{event_id}".encode()
    else:
        basis = orjson.dumps(capi, option=orjson.OPT_SORT_KEYS)
    return sha256_hexdigest(basis)


def _capi_extras(ev: dict[str, Any], out: dict[str, Any]) -> None:
    """The optional CAPI fields, after the fixed ones (their order is the output's)."""
    for k in ("data_processing_options_country", "data_processing_options_state"):
        v = ev.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
    if isinstance(ev.get("referrer_url"), str):
        out["referrer_url"] = ev["referrer_url"]


# Fields a dead letter keeps, with the JSON types they must have (else null): enough to
# fix and re-send the event, and nothing unknown that could hide raw personal data.
_SAFE_FIELDS: dict[str, tuple[type, ...]] = {
    "event_name": (str,),
    "event_time": (int, float),
    "event_id": (str, int),
    "action_source": (str,),
    "event_source_url": (str,),
    "referrer_url": (str,),
    "opt_out": (bool,),
    "custom_data": (dict,),
    "data_processing_options": (list,),
    "data_processing_options_country": (int,),
    "data_processing_options_state": (int,),
}


def safe_event(event: dict[str, Any], hashed_user_data: dict[str, Any]) -> dict[str, Any]:
    """The event as a dead letter may carry it: user_data hashed, unknown fields dropped."""
    out: dict[str, Any] = {}
    for k, types in _SAFE_FIELDS.items():
        if k in event:
            v = event[k]
            ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
            out[k] = v if ok else None
    out["user_data"] = hashed_user_data
    return out


def conversion(
    raw: RawEvent,
    checked: Checked,
    user_data: dict[str, Any],
    *,
    match_quality: dict[str, Any],
    warnings: list[str],
    now: float,
) -> dict[str, Any]:
    """The conversion record (SPEC §7): ``conversion_id``, ``pixel_id``, the CAPI event
    (the fields forward sends), then convstream's fields. Built as one dict: the CAPI part is a
    dict of its own only where the id is the canonical JSON of it (no event_id)."""
    pixel_id = str(raw.pixel_id)
    ev = raw.event
    dpo = ev.get("data_processing_options")
    name, event_id = checked.event_name, checked.event_id
    rec: dict[str, Any] = {
        "conversion_id": "",
        "pixel_id": pixel_id,
        "event_name": name,
        "event_time": checked.event_time,
        "event_id": event_id,
        "action_source": checked.action_source,
        "event_source_url": checked.event_source_url,
        "opt_out": ev.get("opt_out") is True,
        "user_data": user_data,
        "custom_data": checked.custom_data,
        "data_processing_options": dpo if isinstance(dpo, list) else [],
        "test_event_code": _str_or_none(raw.test_event_code),
    }
    _capi_extras(ev, rec)
    capi = rec
    if not event_id:  # the id is the CAPI event's canonical JSON: that part alone
        capi = rec.copy()
        del capi["conversion_id"], capi["pixel_id"]
    rec["conversion_id"] = conversion_id(pixel_id, name, event_id, capi)
    rec["sources"] = [raw.source]
    rec["dedup"] = {"method": None, "duplicates": 0}
    rec["match_quality"] = match_quality
    rec["warnings"] = warnings
    rec["received_at"] = raw.received_at
    rec["emitted_at"] = now
    return rec


def dead_letter(
    origin: Origin,
    *,
    errors: list[Error],
    now: float,
    raw: RawEvent | None = None,
    safe_event: Any = None,
    received_at: float | None = None,
    pixel_id: Any = None,
) -> dict[str, Any]:
    """A dead letter. ``safe_event`` must already have its PII hashed or removed."""
    ev = raw.event if raw is not None and isinstance(raw.event, dict) else {}
    pid = raw.pixel_id if raw is not None else pixel_id
    return {
        "source_topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "event_index": raw.index if raw is not None else None,
        "pixel_id": pid if isinstance(pid, str) and _PIXEL_RE.fullmatch(pid) else None,
        "event_name": _short(ev.get("event_name")),
        "event_id": _short(ev.get("event_id")),
        "received_at": raw.received_at if raw is not None else received_at,
        "errors": [e.as_dict() for e in errors],
        "event": safe_event,
        "rejected_at": now,
    }


_PIXEL_RE = re.compile(r"[0-9]{1,20}")  # ASCII digits only (str.isdigit accepts "١٢٣")


def _short(v: Any) -> str | None:
    """Identifiers echoed in a dead letter: strings only, and bounded in length."""
    return v[:256] if isinstance(v, str) else None


def dead_letter_key(origin: Origin, index: int | None) -> bytes:
    """Kafka key of a dead letter: source topic + partition + offset (+ batch index)."""
    key = f"{origin.topic}:{origin.partition}:{origin.offset}"
    return (key if index is None else f"{key}:{index}").encode()
