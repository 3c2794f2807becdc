"""The pure side of ``convstream collect`` (SPEC §12): HTTP request parts in, raw topic
messages (SPEC §2.1 / §2.2) or Graph-style errors out.

No HTTP server and no Kafka client here: agents/collect.py reads the request, calls these
functions and writes what they return. Nothing here logs, and no error text carries a
request's query, body or token (they hold raw PII and secrets).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson

MAX_EVENTS: Final = 1000  # CAPI's limit per request (SPEC §2.2)

# a transparent 1x1 GIF, the pixel endpoint's answer to a GET
GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

# request fields that are credentials: never written to a topic
_SECRET_FIELDS: Final = frozenset({"access_token", "appsecret_proof"})
_PIXEL_ID_RE: Final = re.compile(r"^[0-9]{1,20}$")
_ID_PARAM_RE: Final = re.compile(r"(?:^|&)id=([0-9]{1,20})(?:&|$)")


@dataclass(frozen=True, slots=True)
class GraphError:
    """A refusal, answered as the Graph API does: ``{"error": {...}}`` with an HTTP status.

    ``reason`` is a bounded metric label; ``message`` never quotes the request."""

    status: int
    code: int
    message: str
    reason: str
    type: str = "OAuthException"
    subcode: int | None = None
    retry_after: int | None = None

    def body(self, fbtrace_id: str) -> bytes:
        err: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "fbtrace_id": fbtrace_id,
        }
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.status >= 500:
            err["is_transient"] = True
        return orjson.dumps({"error": err})


def bad_token() -> GraphError:
    return GraphError(401, 190, "Invalid OAuth access token for this pixel.", "bad_token")


def too_large(limit: int) -> GraphError:
    return GraphError(
        413,
        100,
        f"(#100) Request body larger than {limit} bytes.",
        "too_large",
        "GraphMethodException",
    )


def unavailable(reason: str, retry_after: int = 1) -> GraphError:
    """Kafka did not acknowledge (down, slow, or our pending bound is reached)."""
    return GraphError(
        503, 2, "Service temporarily unavailable; retry later.", reason, retry_after=retry_after
    )


def invalid(message: str, reason: str = "malformed") -> GraphError:
    return GraphError(400, 100, f"(#100) {message}", reason, "GraphMethodException")


def not_found() -> GraphError:
    return GraphError(404, 100, "Unknown path.", "not_found", "GraphMethodException")


def method_not_allowed() -> GraphError:
    return GraphError(405, 100, "Method not allowed here.", "method", "GraphMethodException")


def new_trace_id() -> str:
    """An id for one request, echoed as ``fbtrace_id`` (like Graph's)."""
    return os.urandom(9).hex()


def success_body(events_received: int, fbtrace_id: str) -> bytes:
    return orjson.dumps(
        {"events_received": events_received, "messages": [], "fbtrace_id": fbtrace_id}
    )


# --- client address ------------------------------------------------------------


class TrustedProxies:
    """Addresses whose ``X-Forwarded-For`` is believed (SPEC §12)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._memo: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, str) or not self._nets:
            return False
        hit = self._memo.get(addr)
        if hit is None:  # addr is a normalized address (short): the memo stays small
            ip = _parse_ip(addr)
            hit = ip is not None and any(ip in net for net in self._nets)
            if len(self._memo) > 65_536:
                self._memo.clear()
            self._memo[addr] = hit
        return hit


def _parse_ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    s = raw.strip()
    if s.startswith("["):  # [v6]:port
        s = s[1 : s.find("]")] if "]" in s else s
    elif s.count(":") == 1:  # v4:port
        s = s.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies
) -> str | None:
    """The peer address, or — when the peer is a trusted proxy — the first address of
    ``X-Forwarded-For`` (read right to left) that is not a trusted proxy itself.

    A malformed entry stops the walk: the nearest address that was believed is used, as
    anything to the left of garbage may be forged."""
    peer_ip = _ip_text(peer) if peer else None
    if peer_ip is None or not trusted or peer_ip not in trusted:
        return peer_ip
    hops = [h for header in forwarded_for for h in header.split(",") if h.strip()]
    last = peer_ip
    for hop in reversed(hops):
        ip = _ip_text(hop)
        if ip is None:
            return last
        last = ip
        if last not in trusted:
            return last
    return last


def _ip_text(raw: str) -> str | None:
    """Normalized address text (memoized: the same few addresses come again and again;
    anything longer than an address with a port is not one, and is not memoized)."""
    return None if len(raw) > 64 else _ip_text_memo(raw)


@functools.lru_cache(maxsize=65_536)
def _ip_text_memo(raw: str) -> str | None:
    ip = _parse_ip(raw)
    return None if ip is None else str(ip)


# --- pixel hits (SPEC §2.1) ----------------------------------------------------


def form_query(fields: Iterable[tuple[str, str]]) -> str:
    """Form fields (a multipart body) as one query string."""
    return urlencode(list(fields))


def pixel_query(url_query: str, body: bytes | None) -> str | GraphError:
    """The hit's raw query: the URL's, then a form or text body's (POST)."""
    parts = [url_query] if url_query else []
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return invalid("The body is not UTF-8 text.")
        text = text.strip().lstrip("?")
        if text:
            parts.append(text)
    query = "&".join(parts)
    if not query:
        return invalid("A pixel hit needs query parameters (id, ev, ...).", "empty")
    return query


def pixel_message(received_at: float, ip: str | None, user_agent: str | None, query: str) -> bytes:
    """One ``events.pixel.raw`` value."""
    msg: dict[str, Any] = {"received_at": received_at, "query": query}
    if ip is not None:
        msg["ip"] = ip
    if user_agent:
        msg["user_agent"] = user_agent
    return orjson.dumps(msg)


def pixel_key(query: str) -> bytes | None:
    """The Kafka key of a hit: its pixel id when the query has a well-formed one."""
    m = _ID_PARAM_RE.search(query)
    return m.group(1).encode() if m else None


# --- Conversions API requests (SPEC §2.2) -----------------------------------------


@dataclass(frozen=True, slots=True)
class CapiRequest:
    """A checked CAPI request: the body fields (credentials removed) and its token."""

    pixel_id: str
    fields: dict[str, Any]
    token: str | None
    events: int


def capi_path(segments: list[str]) -> str | None:
    """The pixel id of ``/{api_version}/{pixel_id}/events`` or ``/{pixel_id}/events``."""
    if len(segments) == 3 and segments[2] == "events" and re.match(r"^v\d+(\.\d+)?$", segments[0]):
        pixel = segments[1]
    elif len(segments) == 2 and segments[1] == "events":
        pixel = segments[0]
    else:
        return None
    return pixel if _PIXEL_ID_RE.match(pixel) else None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    return None


def _form_fields(body: bytes) -> dict[str, Any] | GraphError:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return invalid("The form body is not UTF-8 url-encoded text.")
    fields: dict[str, Any] = dict(pairs)
    if "data" in fields:
        try:
            fields["data"] = orjson.loads(fields["data"])
        except orjson.JSONDecodeError:
            return invalid("Param data must be a JSON array of events.", "bad_data")
    return fields


def capi_request(
    pixel_id: str,
    body: bytes,
    content_type: str,
    url_query: Mapping[str, str],
    authorization: str | None = None,
) -> CapiRequest | GraphError:
    """Parse a CAPI request body: JSON, or form fields with ``data`` as JSON text (the
    SDKs' form). The token may be in the body, the URL query or ``Authorization``."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    fields: dict[str, Any]
    if ctype == "application/x-www-form-urlencoded" or (
        ctype != "application/json" and not body.lstrip().startswith(b"{")
    ):
        parsed = _form_fields(body)
        if isinstance(parsed, GraphError):
            return parsed
        fields = parsed
    else:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return invalid("The body is not valid JSON.")
        if not isinstance(value, dict):
            return invalid("The body must be a JSON object.")
        fields = value
    token = (
        fields.get("access_token") or url_query.get("access_token") or bearer_token(authorization)
    )
    if not isinstance(token, str):
        token = None
    for name in _SECRET_FIELDS:
        fields.pop(name, None)
    data = fields.get("data")
    if data is None:
        return invalid("The parameter data is required.", "bad_data")
    if not isinstance(data, list):
        return invalid("Param data must be an array of events.", "bad_data")
    if len(data) > MAX_EVENTS:
        return invalid(
            f"A request holds at most {MAX_EVENTS} events, got {len(data)}.", "too_many_events"
        )
    # the SDKs send each event as JSON text inside the JSON array
    for i, event in enumerate(data):
        if isinstance(event, str):
            try:
                data[i] = orjson.loads(event)
            except orjson.JSONDecodeError:
                pass  # left as is: the worker dead-letters it (invalid_type) with the rest going on
    tec = fields.get("test_event_code")
    if tec is not None and not isinstance(tec, str):
        return invalid("Param test_event_code must be a string.", "bad_data")
    return CapiRequest(pixel_id, fields, token, len(data))


def token_ok(tokens: Mapping[str, frozenset[str]], pixel_id: str, token: str | None) -> bool:
    """Is ``token`` one configured for ``pixel_id``? (constant-time per candidate)"""
    if token is None:
        return False
    given = token.encode()
    ok = False
    for want in tokens.get(pixel_id, frozenset()):
        ok |= hmac.compare_digest(want.encode(), given)
    return ok


def token_table(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for pixel, token in pairs:
        table.setdefault(pixel, set()).add(token)
    return {p: frozenset(t) for p, t in table.items()}


def server_message(received_at: float, req: CapiRequest) -> bytes:
    """One ``events.server.raw`` value: the body plus ``received_at`` and ``pixel_id``
    (the path's pixel id and the server clock win over any the client sent). They come
    first, as in a pixel hit: ``convstream process`` reads a line's time from its start."""
    msg: dict[str, Any] = {"received_at": received_at, "pixel_id": req.pixel_id}
    for k, v in req.fields.items():
        if k not in msg:
            msg[k] = v
    return orjson.dumps(msg)
