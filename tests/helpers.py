"""Builders for raw messages and a one-call pipeline runner, shared by the tests."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

import orjson

from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings

RECEIVED_AT = 1795400000.5
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def server_event(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(RECEIVED_AT) - 10,
        "event_id": "order-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {"em": "John_Smith@Gmail.com ", "client_user_agent": UA},
        "custom_data": {"value": 49.9, "currency": "eur"},
    }
    for k, v in over.items():
        if v is DELETE:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


class _Delete:
    pass


DELETE: Any = _Delete()


def server_message(*events: dict[str, Any], **over: Any) -> bytes:
    msg: dict[str, Any] = {
        "received_at": RECEIVED_AT,
        "pixel_id": "1234567890",
        "data": [copy.deepcopy(e) for e in events] or [server_event()],
    }
    msg.update(over)
    return orjson.dumps(msg)


def pixel_hit(params: dict[str, str] | None = None, *, as_query: bool = True, **over: Any) -> bytes:
    p = {
        "id": "1234567890",
        "ev": "Purchase",
        "eid": "order-1001",
        "dl": "https://shop.example/thanks",
        "ts": str(int(RECEIVED_AT * 1000) - 1000),
        "cd[value]": "49.90",
        "cd[currency]": "EUR",
    }
    p.update(params or {})
    hit: dict[str, Any] = {"received_at": RECEIVED_AT, "ip": "203.0.113.7", "user_agent": UA}
    if as_query:
        hit["query"] = urlencode(p)
    else:
        hit["params"] = p
    hit.update(over)
    return orjson.dumps(hit)


def run(
    source: Source, *values: bytes, settings: Settings | None = None, now: float = 1795400001.0
) -> Result:
    pipe = Pipeline(settings or Settings())
    out = Result()
    topic = "events.server.raw" if source == "server" else "events.pixel.raw"
    for i, v in enumerate(values):
        pipe.process(source, v, Origin(topic, 0, i), now, out)
    return out


def codes_of(result: Result) -> list[list[str]]:
    return [[e["code"] for e in d["errors"]] for d in result.dead_letters]
