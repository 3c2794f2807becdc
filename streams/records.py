"""Output records: the conversion (SPEC §7) and the dead letter (SPEC §4)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from streams.codes import Error
from streams.model import Origin, RawEvent

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
    pixel_id: str, event_name: str, event_id: str | None, capi: dict[str, Any]
) -> str:
    """Stable id: the event_id dedup key, or the canonical JSON of the kept CAPI event."""
    if event_id:
        basis = f"{pixel_id}|{event_name}|{event_id}".encode()
    else:
        basis = orjson.dumps(capi, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(basis).hexdigest()


def capi_event(
    raw: RawEvent, user_data: dict[str, Any], custom_data: dict[str, Any]
) -> dict[str, Any]:
    """The CAPI server-event part of a conversion (validated input assumed)."""
    ev = raw.event
    dpo = ev.get("data_processing_options")
    out: dict[str, Any] = {
        "event_name": ev["event_name"],
        "event_time": ev["event_time"],
        "event_id": _str_or_none(ev.get("event_id")) or None,
        "action_source": ev["action_source"],
        "event_source_url": _str_or_none(ev.get("event_source_url")),
        "opt_out": bool(ev.get("opt_out", False)),
        "user_data": user_data,
        "custom_data": custom_data,
        "data_processing_options": dpo if isinstance(dpo, list) else [],
        "test_event_code": _str_or_none(raw.test_event_code),
    }
    for k in ("data_processing_options_country", "data_processing_options_state"):
        if isinstance(ev.get(k), int) and not isinstance(ev.get(k), bool):
            out[k] = ev[k]
    return out


def conversion(
    raw: RawEvent,
    capi: dict[str, Any],
    *,
    match_quality: dict[str, Any],
    warnings: list[str],
    now: float,
) -> dict[str, Any]:
    pixel_id = str(raw.pixel_id)
    rec: dict[str, Any] = {
        "conversion_id": conversion_id(pixel_id, capi["event_name"], capi["event_id"], capi),
        "pixel_id": pixel_id,
    }
    rec.update(capi)
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
        "pixel_id": pid if isinstance(pid, str) and pid.isdigit() and len(pid) <= 20 else None,
        "event_name": _short(ev.get("event_name")),
        "event_id": _short(ev.get("event_id")),
        "received_at": raw.received_at if raw is not None else received_at,
        "errors": [e.as_dict() for e in errors],
        "event": safe_event,
        "rejected_at": now,
    }


def _short(v: Any) -> str | None:
    """Identifiers echoed in a dead letter: strings only, and bounded in length."""
    return v[:256] if isinstance(v, str) else None


def dead_letter_key(origin: Origin, index: int | None) -> bytes:
    """Kafka key of a dead letter: source topic + partition + offset (+ batch index)."""
    key = f"{origin.topic}:{origin.partition}:{origin.offset}"
    return (key if index is None else f"{key}:{index}").encode()
