"""The pure part of ``convstream forward`` (SPEC §11): conversion record → CAPI event,
batches per (pixel_id, test_event_code), Graph API response classes, the retry / split
plan, and which input offsets are settled. No Kafka, no HTTP: agents/forward.py wires it.
"""

from __future__ import annotations

import email.utils
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from streams import records
from streams.settings import Forward

# SPEC §7: the fields a conversion record has that a CAPI server event does not.
CONVSTREAM_ONLY: Final = frozenset(records.CONVSTREAM_FIELDS)
REQUEST_LEVEL: Final = frozenset({"test_event_code"})
_NOT_SENT: Final = CONVSTREAM_ONLY | REQUEST_LEVEL
MAX_EVENTS: Final = 1000  # CAPI: at most 1000 events per request

# Graph API error codes, SPEC §11.
RETRY_CODES: Final = frozenset({1, 2, 341})
THROTTLE_CODES: Final = frozenset({4, 17, 32, 613, 80003, 80004})
AUTH_CODES: Final = frozenset({190})

Kind = Literal["ok", "retry", "throttle", "reject", "auth"]
# bounded metric labels: why a request was retried / an event dead-lettered
RETRY_REASONS: Final = (
    "timeout",
    "transport",
    "http_5xx",
    "graph_transient",
    "not_graph_error",
    "throttled",
    "paused",
)
REJECT_REASONS: Final = ("rejected", "no_access_token", "invalid_record", "retries_exhausted")

_PIXEL_RE: Final = re.compile(r"^[0-9]{1,20}$")
_MESSAGE_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class Item:
    """One conversion to send, with where it came from (``partition`` None offline)."""

    partition: int | None
    offset: int
    pixel_id: str
    test_event_code: str | None
    event: dict[str, Any]

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.pixel_id, self.test_event_code)


@dataclass(frozen=True, slots=True)
class Bad:
    """An input record that is not a conversion (SPEC §7): dead-lettered, never sent."""

    partition: int | None
    offset: int
    message: str
    record: dict[str, Any] | None  # the record when it was a JSON object


def capi_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """The CAPI server event of a conversion record: the convstream-only fields and the
    request-level ``test_event_code`` removed, null fields left out, ``event_id`` =
    ``conversion_id`` when the record has none (so Meta deduplicates repeats)."""
    event = {k: v for k, v in record.items() if v is not None and k not in _NOT_SENT}
    if not event.get("event_id"):
        event["event_id"] = record["conversion_id"]
    return event


def decode(value: bytes | None, partition: int | None, offset: int) -> Item | Bad:
    """A ``conversions.enriched`` value → an Item, or Bad with what is wrong."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return Bad(partition, offset, "not JSON", None)
    if not isinstance(record, dict):
        return Bad(partition, offset, "not a JSON object", None)
    problems = []
    for name in ("conversion_id", "event_name", "action_source"):
        v = record.get(name)
        if not isinstance(v, str) or not v:
            problems.append(f"{name} is not a non-empty string")
    pixel = record.get("pixel_id")
    if not isinstance(pixel, str) or not _PIXEL_RE.match(pixel):
        problems.append("pixel_id is not a pixel id")
    et = record.get("event_time")
    if not isinstance(et, int) or isinstance(et, bool):
        problems.append("event_time is not an integer")
    if not isinstance(record.get("user_data"), dict):
        problems.append("user_data is not an object")
    tec = record.get("test_event_code")
    if tec is not None and not (isinstance(tec, str) and tec):
        problems.append("test_event_code is not null or a non-empty string")
    eid = record.get("event_id")
    if eid is not None and not isinstance(eid, str):
        problems.append("event_id is not null or a string")
    if problems:
        return Bad(partition, offset, "; ".join(problems), record)
    assert isinstance(pixel, str)
    return Item(partition, offset, pixel, tec, capi_event(record))


def request_body(events: Iterable[dict[str, Any]], test_event_code: str | None) -> dict[str, Any]:
    """The JSON body of ``POST /{version}/{pixel}/events``, without the access token."""
    body: dict[str, Any] = {"data": list(events)}
    if test_event_code is not None:
        body["test_event_code"] = test_event_code
    return body


def encode_body(body: Mapping[str, Any], access_token: str) -> bytes:
    """The request bytes: the body with ``access_token`` (in the body, never in the URL,
    so it does not end up in proxy or client logs)."""
    return orjson.dumps({**body, "access_token": access_token})


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced (an echoed token never reaches a log or a DLQ)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


# --- batches ------------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    pixel_id: str
    test_event_code: str | None
    items: list[Item]
    first: int = 0  # read order of its first item: the batch with the oldest goes first


@dataclass(slots=True)
class _Open:
    started: float
    first: int
    items: list[Item] = field(default_factory=list)


class Batcher:
    """Open batches per (pixel_id, test_event_code): a batch leaves when full or when its
    first event waited ``linger`` seconds. The clock is a parameter."""

    def __init__(self, size: int = MAX_EVENTS, linger: float = 1.0) -> None:
        if not 1 <= size <= MAX_EVENTS:
            raise ValueError(f"batch size must be 1..{MAX_EVENTS}")
        self.size = size
        self.linger = linger
        self._open: dict[tuple[str, str | None], _Open] = {}
        self._added = 0

    def __len__(self) -> int:
        return sum(len(o.items) for o in self._open.values())

    def add(self, item: Item, now: float) -> Batch | None:
        """Add one item; the batch it filled, if it did."""
        open_ = self._open.get(item.key)
        if open_ is None:
            open_ = self._open[item.key] = _Open(now, self._added)
        self._added += 1
        open_.items.append(item)
        if len(open_.items) >= self.size:
            del self._open[item.key]
            return Batch(item.pixel_id, item.test_event_code, open_.items, open_.first)
        return None

    def due(self, now: float) -> list[Batch]:
        """Batches whose first item waited ``linger`` seconds."""
        keys = [k for k, o in self._open.items() if now - o.started >= self.linger]
        return [self._take(k) for k in keys]

    def drain(self) -> list[Batch]:
        """Every open batch (end of input, shutdown)."""
        return [self._take(k) for k in list(self._open)]

    def next_due(self) -> float | None:
        """When the oldest open batch is due, or None."""
        return min((o.started for o in self._open.values()), default=None)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the items of revoked partitions (their next owner sends them)."""
        for k in list(self._open):
            o = self._open[k]
            o.items = [i for i in o.items if i.partition not in partitions]
            if not o.items:
                del self._open[k]

    def _take(self, key: tuple[str, str | None]) -> Batch:
        o = self._open.pop(key)
        return Batch(key[0], key[1], o.items, o.first)


def chunks(items: Iterable[Item], size: int = MAX_EVENTS) -> list[Batch]:
    """All items in batches per key, in input order (offline: no linger)."""
    b = Batcher(size, linger=0.0)
    out = [full for item in items if (full := b.add(item, 0.0)) is not None]
    return out + b.drain()


def split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Two halves of a rejected batch (bisection isolates the bad events)."""
    mid = (len(items) + 1) // 2
    return items[:mid], items[mid:]


# --- responses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request's answer means. ``reason`` is a bounded metric label."""

    kind: Kind
    reason: str
    status: int | None = None
    code: int | None = None
    subcode: int | None = None
    message: str | None = None
    fbtrace_id: str | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _graph_error(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), int):
        return err
    return None


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def classify(
    status: int, retry_after: str | None, body: bytes, now: float, secrets: Iterable[str] = ()
) -> Outcome:
    """One HTTP answer → its class (SPEC §11). A Graph error code decides before the HTTP
    status; a 4xx without a Graph error body (a proxy, a wrong URL) is retried, not taken
    as a rejection of the events."""
    wait = parse_retry_after(retry_after, now)
    if 200 <= status < 300:
        return Outcome("ok", "ok", status)
    err = _graph_error(body)
    if err is None:
        if status == 429:
            return Outcome("throttle", "throttled", status, retry_after=wait)
        if status == 413:
            return Outcome("reject", "rejected", status, message="request entity too large")
        reason = "http_5xx" if status >= 500 else "not_graph_error"
        return Outcome("retry", reason, status, retry_after=wait)
    code = err["code"]
    message = err.get("message")
    if isinstance(message, str):
        user_msg = err.get("error_user_msg")
        if isinstance(user_msg, str) and user_msg:
            message = f"{message} ({user_msg})"
        message = redact(message, secrets)[:_MESSAGE_MAX]
    else:
        message = None
    trace = err.get("fbtrace_id")
    common: dict[str, Any] = {
        "status": status,
        "code": code,
        "subcode": _int_or_none(err.get("error_subcode")),
        "message": message,
        "fbtrace_id": trace if isinstance(trace, str) else None,
    }
    if code in AUTH_CODES:
        return Outcome("auth", "paused", **common)
    if code in THROTTLE_CODES or status == 429:
        return Outcome("throttle", "throttled", retry_after=wait, **common)
    if code in RETRY_CODES:
        return Outcome("retry", "graph_transient", retry_after=wait, **common)
    if status >= 500:
        return Outcome("retry", "http_5xx", retry_after=wait, **common)
    if 400 <= status < 500:
        return Outcome("reject", "rejected", **common)
    return Outcome("retry", "not_graph_error", retry_after=wait, **common)


def transport_failure(kind: Literal["timeout", "transport"]) -> Outcome:
    """A request that got no answer: a timeout, or a refused / reset connection."""
    return Outcome("retry", kind)


# --- the plan after an answer -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with a batch after an answer: ``done``; ``wait`` then send again (the
    pixel waits when ``pixel_wide``); ``split`` into halves; ``dead_letter`` its event."""

    action: Literal["done", "wait", "split", "dead_letter"]
    delay: float = 0.0
    pixel_wide: bool = False
    reason: str = ""


def backoff(attempt: int, base: float, cap: float, rnd: Callable[[], float]) -> float:
    """Exponential backoff with jitter ("equal jitter"): between half and all of
    ``min(cap, base * 2**attempt)``; ``rnd`` gives [0, 1)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    return ceiling / 2 + rnd() * ceiling / 2


def plan(outcome: Outcome, size: int, attempt: int, fw: Forward, rnd: Callable[[], float]) -> Step:
    """The next step for a batch of ``size`` events that got ``outcome`` on its
    ``attempt``-th failed try (0-based; throttles and pauses do not count)."""
    if outcome.kind == "ok":
        return Step("done")
    if outcome.kind == "reject":
        return Step("split") if size > 1 else Step("dead_letter", reason="rejected")
    if outcome.kind == "auth":
        return Step("wait", fw.pause_probe, pixel_wide=True, reason="paused")
    if outcome.kind == "throttle":
        if outcome.retry_after is not None:
            delay = outcome.retry_after
        else:
            delay = fw.throttle_wait * (1.0 + 0.5 * rnd())
        return Step("wait", delay, pixel_wide=True, reason="throttled")
    if fw.max_attempts and attempt + 1 >= fw.max_attempts:
        return Step("dead_letter", reason="retries_exhausted")
    delay = backoff(attempt, fw.retry_base, fw.retry_max, rnd)
    if outcome.retry_after is not None:  # e.g. a 503 that says when: never sooner
        delay = max(delay, outcome.retry_after)
    return Step("wait", delay, reason=outcome.reason)


# --- dead letters -------------------------------------------------------------------------


def dead_letter(
    source_topic: str,
    thing: Item | Bad,
    reason: str,
    outcome: Outcome | None,
    attempts: int,
    now: float,
) -> dict[str, Any]:
    """A ``conversions.forward_dead_letter`` value (schemas/forward_dead_letter.schema.json).
    The event is the hashed CAPI event as it was sent; a Bad record keeps no event."""
    event: dict[str, Any] | None = None
    pixel: str | None = None
    tec: str | None = None
    name: Any = None
    eid: Any = None
    if isinstance(thing, Item):
        event = thing.event
        pixel, tec = thing.pixel_id, thing.test_event_code
        name, eid = event.get("event_name"), event.get("event_id")
        message = outcome.message if outcome is not None else None
    else:
        raw_pixel = (thing.record or {}).get("pixel_id")
        if isinstance(raw_pixel, str) and _PIXEL_RE.match(raw_pixel):
            pixel = raw_pixel
        message = thing.message
    return {
        "source_topic": source_topic,
        "partition": thing.partition,
        "offset": thing.offset,
        "pixel_id": pixel,
        "test_event_code": tec,
        "event_name": name if isinstance(name, str) else None,
        "event_id": eid if isinstance(eid, str) else None,
        "reason": reason,
        "http_status": outcome.status if outcome is not None else None,
        "code": outcome.code if outcome is not None else None,
        "subcode": outcome.subcode if outcome is not None else None,
        "message": message,
        "fbtrace_id": outcome.fbtrace_id if outcome is not None else None,
        "attempts": attempts,
        "event": event,
        "rejected_at": round(now, 3),
    }


def dead_letter_key(thing: Item | Bad) -> bytes:
    """Kafka key of a forward dead letter: the input's partition:offset."""
    return f"{thing.partition}:{thing.offset}".encode()


# --- offsets ------------------------------------------------------------------------------


class OffsetTracker:
    """Which input offsets may be committed: per partition, the offset after the longest
    run of settled (sent or dead-lettered) records from the start. Offsets are added in
    consumption order."""

    def __init__(self) -> None:
        self._seen: dict[int, deque[int]] = {}
        self._settled: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}

    def add(self, partition: int, offset: int) -> None:
        self._seen.setdefault(partition, deque()).append(offset)
        self._settled.setdefault(partition, set())

    def settle(self, partition: int, offset: int) -> None:
        if partition in self._settled:
            self._settled[partition].add(offset)

    def pending(self) -> int:
        """Records read and not settled yet (events waiting)."""
        return sum(len(q) - len(self._settled[p]) for p, q in self._seen.items())

    def oldest(self, partition: int) -> int | None:
        """The oldest offset of ``partition`` read and not committable yet (None: none)."""
        q = self._seen.get(partition)
        return q[0] if q else None

    def uncommitted(self) -> int:
        """Records read and not committable yet (settled ones behind an unsettled one
        included): what a crash now would read, and send, again."""
        return sum(len(q) for q in self._seen.values())

    def committable(self) -> dict[int, int]:
        """Partition → next offset to commit, for partitions that advanced since the last
        call (and only those)."""
        out: dict[int, int] = {}
        for p, q in self._seen.items():
            done = self._settled[p]
            last = None
            while q and q[0] in done:
                last = q.popleft()
                done.discard(last)
            if last is not None:
                self._next[p] = last + 1
                out[p] = last + 1
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._seen.pop(p, None)
            self._settled.pop(p, None)
            self._next.pop(p, None)

    def partitions(self) -> Iterator[int]:
        return iter(self._seen)
