"""Raw topic messages (SPEC §2) back into the HTTP requests the Meta Pixel and the CAPI
SDKs would have sent to ``convstream collect`` (used by ``convstream demo``, the tests
and bench/collect.py).

The collector stamps ``received_at`` with its own clock, so recorded traffic is moved to
"now": every time in it (``received_at``, pixel ``ts``, CAPI ``event_time``, the creation
time inside ``fbp`` / ``fbc``) is shifted by the same amount, which keeps every
difference the pipeline looks at (clock skew, event age, click lag, dedup windows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

_FB_ID = re.compile(r"(fb\.\d+\.)(\d{13})(\.)")
_TS = re.compile(r"(^|&)ts=(\d{13})(?=&|$)")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request for the collector; ``source`` is browser or server."""

    source: str
    method: str
    path: str  # with the query string
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    received_at: float | None = None  # of the recorded message (None: not a message)


def _shift_fb(text: str, delta_ms: int) -> str:
    return _FB_ID.sub(lambda m: f"{m[1]}{int(m[2]) + delta_ms}{m[3]}", text)


def shift_query(query: str, delta: int) -> str:
    ms = delta * 1000
    query = _TS.sub(lambda m: f"{m[1]}ts={int(m[2]) + ms}", query)
    return _shift_fb(query, ms)


def _shift_event(event: Any, delta: int) -> Any:
    if not isinstance(event, dict):
        return event
    out = dict(event)
    t = out.get("event_time")
    if isinstance(t, int) and not isinstance(t, bool):
        out["event_time"] = t + delta * 1000 if t >= 10**12 else t + delta
    ud = out.get("user_data")
    if isinstance(ud, dict):
        out["user_data"] = {
            k: _shift_fb(v, delta * 1000) if k in ("fbp", "fbc") and isinstance(v, str) else v
            for k, v in ud.items()
        }
    return out


def pixel_request(msg: Mapping[str, Any], delta: int, headers: Mapping[str, str]) -> Request:
    """A hit as the Pixel's image GET; its ip rides in X-Forwarded-For (the collector
    believes it when the sender is a trusted proxy)."""
    if isinstance(msg.get("query"), str):
        query = str(msg["query"])
    else:
        params = msg.get("params")
        query = urlencode(list(params.items())) if isinstance(params, dict) else ""
    h = dict(headers)
    if isinstance(msg.get("user_agent"), str):
        h["User-Agent"] = msg["user_agent"]
    if isinstance(msg.get("ip"), str):
        h["X-Forwarded-For"] = msg["ip"]
    return Request("browser", "GET", f"/tr?{shift_query(query, delta)}", h, b"", msg["received_at"])


def server_request(
    msg: Mapping[str, Any], delta: int, token: str, api_version: str = "v24.0"
) -> Request:
    """A CAPI body as an SDK posts it (JSON; the collector adds received_at, pixel_id)."""
    body = {k: v for k, v in msg.items() if k not in ("received_at", "pixel_id")}
    data = body.get("data")
    if isinstance(data, list):
        body["data"] = [_shift_event(e, delta) for e in data]
    body["access_token"] = token
    return Request(
        "server",
        "POST",
        f"/{api_version}/{msg['pixel_id']}/events",
        {"Content-Type": "application/json"},
        orjson.dumps(body),
        msg["received_at"],
    )


def requests_for(
    pixel_lines: Iterable[bytes],
    server_lines: Iterable[bytes],
    *,
    now: float,
    token: str,
    headers: Mapping[str, str] | None = None,
) -> list[Request]:
    """Requests in ``received_at`` order (ties: pixel first, as ``process`` reads), times
    moved so the latest message is ``now``. A line that is not a message is posted as
    it is (the collector refuses it with a 400, where ``process`` dead-letters it)."""
    parsed: list[tuple[str, Any, bytes]] = []
    for source, lines in (("browser", pixel_lines), ("server", server_lines)):
        for line in lines:
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            parsed.append((source, value, line))
    times = [
        v["received_at"]
        for _, v, _ in parsed
        if isinstance(v, dict) and isinstance(v.get("received_at"), int | float)
    ]
    delta = int(now - max(times)) if times else 0
    out: list[Request] = []
    for source, value, line in parsed:
        ok = isinstance(value, dict) and isinstance(value.get("received_at"), int | float)
        if source == "browser" and ok:
            out.append(pixel_request(value, delta, headers or {}))
        elif source == "server" and ok and isinstance(value.get("pixel_id"), str):
            out.append(server_request(value, delta, token))
        else:
            path = "/tr" if source == "browser" else "/v24.0/0/events"
            out.append(Request(source, "POST", path, {"Content-Type": "application/json"}, line))
    # stable sort by recorded received_at; unparseable lines keep their neighbours' place
    keyed: list[tuple[float, int, int, Request]] = []
    last = float("-inf")
    for i, r in enumerate(out):
        t = r.received_at if r.received_at is not None else last
        last = t
        keyed.append((t, 0 if r.source == "browser" else 1, i, r))
    return [r for *_, r in sorted(keyed, key=lambda k: k[:3])]
