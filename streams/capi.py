"""Conversions API bodies (``events.server.raw``, SPEC §2.2) → canonical events.

Only the message envelope is judged here (JSON object, ``received_at``, ``data`` list,
batch size); each event in ``data`` is judged alone later, so one bad event never
takes its batch down.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from streams import codes
from streams.codes import Error
from streams.model import Parsed, RawEvent

MAX_BATCH: Final = 1000


class _NotDecoded:
    """The type of ``NOT_DECODED``."""


# "the caller has not decoded the value" (JSON ``null`` decodes to None)
NOT_DECODED: Final = _NotDecoded()


def decode_object(
    value: bytes, decoded: object = NOT_DECODED
) -> tuple[dict[str, Any] | None, list[Error]]:
    """Decode one message value as a JSON object that carries a numeric ``received_at``;
    ``decoded``: the value already decoded by the caller (the ingest aligner reads
    ``received_at`` first), so it is not decoded twice."""
    if decoded is NOT_DECODED:
        try:
            obj = orjson.loads(value)
        except (orjson.JSONDecodeError, TypeError):
            return None, [Error(codes.MALFORMED_MESSAGE, None, "value is not valid UTF-8 JSON")]
    else:
        obj = decoded
    if not isinstance(obj, dict):
        return None, [Error(codes.MALFORMED_MESSAGE, None, "value is not a JSON object")]
    ra = obj.get("received_at")
    if ra is None:
        return None, [Error(codes.MALFORMED_MESSAGE, "received_at", "received_at is missing")]
    if isinstance(ra, bool) or not isinstance(ra, int | float) or not (0 <= ra < 1e11):
        return None, [
            Error(codes.MALFORMED_MESSAGE, "received_at", "received_at must be Unix seconds")
        ]
    return obj, []


def parse(value: bytes, decoded: object = NOT_DECODED) -> Parsed:
    obj, errors = decode_object(value, decoded)
    if obj is None:
        return Parsed(errors=errors)
    received_at = float(obj["received_at"])
    pixel_id = obj.get("pixel_id")
    out = Parsed(received_at=received_at, pixel_id=pixel_id)
    data = obj.get("data")
    if data is None:
        out.errors.append(Error(codes.MISSING_FIELD, "data", "data (the events list) is missing"))
        return out
    if not isinstance(data, list):
        out.errors.append(Error(codes.INVALID_TYPE, "data", "data must be a list of events"))
        return out
    if len(data) > MAX_BATCH:
        out.errors.append(
            Error(codes.BATCH_TOO_LARGE, "data", f"{len(data)} events; at most {MAX_BATCH}")
        )
        return out
    tec = obj.get("test_event_code")
    out.events = [
        RawEvent(
            source="server",
            index=i,
            pixel_id=pixel_id,
            received_at=received_at,
            event=ev,
            test_event_code=tec,
        )
        for i, ev in enumerate(data)
    ]
    return out
