"""The Graph API client of ``convstream forward``: sends a batch until every event is
accepted by Meta or isolated as rejected (SPEC §11), with per-pixel gates (throttled,
paused) and request slots handed out oldest batch first. The decisions are in
streams/forward.py; this module only waits and does HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from streams import forward as fwd
from streams import metrics
from streams.settings import Forward

log = logging.getLogger("convstream.forward")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that ends as a dead letter, with why."""

    thing: fwd.Item | fwd.Bad
    reason: str
    outcome: fwd.Outcome | None
    attempts: int


async def pause(closing: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds; raise Closing at once when the forwarder stops."""
    if closing.is_set():
        raise Closing
    try:
        await asyncio.wait_for(closing.wait(), delay)
    except TimeoutError:
        return
    raise Closing


class Closing(Exception):
    """The forwarder stops: a delivery that would have to wait gives up (unsettled, so
    its events are read again after the restart)."""


class Slots:
    """``n`` request slots, handed out oldest batch first (not first come): the batch
    holding the oldest unsent events goes next, so offsets can be committed sooner."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self.free > 0 and not self._heap:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            raise

    def release(self) -> None:
        while self._heap:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class PixelGate:
    """One pixel's sending state: active, throttled (until a time) or paused (bad token;
    probed again after ``pause_probe``). Every request of the pixel waits at the gate."""

    def __init__(self, pixel_id: str, configured: bool, closing: asyncio.Event) -> None:
        self.closing = closing
        self.pixel_id = pixel_id
        self.configured = configured
        self.state = "active"
        self.not_before = 0.0
        self._show()

    async def wait(self) -> None:
        while (delay := self.not_before - time.monotonic()) > 0:
            await pause(self.closing, delay)

    def hold(self, delay: float, state: str) -> None:
        self.not_before = max(self.not_before, time.monotonic() + delay)
        if state != self.state:
            level = logging.ERROR if state == "paused" else logging.WARNING
            msg = (
                "pixel paused: Meta rejected its access token (code 190); its events are "
                "kept and the token is probed again"
                if state == "paused"
                else "pixel throttled by Meta; waiting before sending again"
            )
            log.log(level, msg, extra={"pixel_id": self.pixel_id, "wait_s": round(delay, 3)})
            self.state = state
            self._show()

    def answered(self) -> None:
        if self.state != "active":
            log.info("pixel sending again", extra={"pixel_id": self.pixel_id, "was": self.state})
            self.state = "active"
            self._show()

    def _show(self) -> None:
        if self.configured:  # the label set stays bounded by the configured pixels
            for st in metrics.PIXEL_STATES:
                metrics.FORWARD_PIXEL_STATE.labels(self.pixel_id, st).set(st == self.state)


class TokenRejected(Exception):
    """Offline only: Meta rejected a pixel's access token (code 190). Names the pixel."""


class Sender:
    """Sends batches to ``{graph_url}/{api_version}/{pixel_id}/events`` until every event
    is accepted or isolated as rejected. At most ``concurrency`` requests at once. On a
    rejected token the pixel waits and is probed again, or (``fail_on_auth``, offline)
    TokenRejected is raised."""

    def __init__(
        self,
        fw: Forward,
        session: aiohttp.ClientSession,
        rnd: Callable[[], float] = random.random,
        *,
        fail_on_auth: bool = False,
    ) -> None:
        self.fail_on_auth = fail_on_auth
        self.fw = fw
        self.session = session
        self.rnd = rnd
        self.tokens = dict(fw.access_tokens)
        self.secrets = tuple(self.tokens.values())
        self.slots = Slots(fw.concurrency)
        self.closing = asyncio.Event()
        self.gates = {p: PixelGate(p, True, self.closing) for p in self.tokens}
        self.timeout = aiohttp.ClientTimeout(total=fw.timeout)
        self.requests = 0

    def paused(self) -> list[str]:
        return sorted(p for p, g in self.gates.items() if g.state == "paused")

    async def deliver(self, batch: fwd.Batch) -> list[Rejected]:
        """Every event of ``batch`` sent or rejected; the rejected ones are returned."""
        token = self.tokens.get(batch.pixel_id)
        if token is None:
            return [Rejected(i, "no_access_token", None, 0) for i in batch.items]
        gate = self.gates[batch.pixel_id]
        rejected: list[Rejected] = []
        # (items, failed tries of this batch, requests that carried these items so far)
        work: list[tuple[list[fwd.Item], int, int]] = [(batch.items, 0, 0)]
        while work:
            items, attempt, carried = work.pop()
            carried += 1
            outcome = await self._send_through(gate, batch, items, token)
            step = fwd.plan(outcome, len(items), attempt, self.fw, self.rnd)
            if outcome.kind not in ("throttle", "auth"):
                gate.answered()
            elif outcome.kind == "auth" and self.fail_on_auth:
                raise TokenRejected(
                    f"pixel {batch.pixel_id}: Meta rejected its access token (code 190, "
                    f"subcode {outcome.subcode}); fix the token and run again (events sent "
                    "already are deduplicated by event_id)"
                )
            if step.action == "done":
                names = Counter(metrics.event_label(i.event.get("event_name")) for i in items)
                for name, n in names.items():
                    metrics.FORWARD_EVENTS_SENT.labels(name).inc(n)
            elif step.action == "split":
                metrics.FORWARD_SPLITS.inc()
                left, right = fwd.split(items)
                work.extend(((right, 0, carried), (left, 0, carried)))  # left half first
            elif step.action == "dead_letter":
                rejected.extend(Rejected(i, step.reason, outcome, carried) for i in items)
            else:
                metrics.FORWARD_EVENTS_RETRIED.labels(step.reason).inc(len(items))
                if step.pixel_wide:
                    gate.hold(step.delay, step.reason)
                    work.append((items, attempt, carried))
                else:
                    await pause(self.closing, step.delay)
                    work.append((items, attempt + 1, carried))
        return rejected

    async def _send_through(
        self, gate: PixelGate, batch: fwd.Batch, items: list[fwd.Item], token: str
    ) -> fwd.Outcome:
        """Wait for the pixel's gate and a request slot; the gate is checked again with
        the slot held, so a throttle seen meanwhile is honoured."""
        while True:
            await gate.wait()
            await self.slots.acquire(batch.first)
            try:
                if gate.not_before > time.monotonic():
                    continue
                return await self._post(batch, items, token)
            finally:
                self.slots.release()

    async def _post(self, batch: fwd.Batch, items: list[fwd.Item], token: str) -> fwd.Outcome:
        url = f"{self.fw.graph_url}/{self.fw.api_version}/{batch.pixel_id}/events"
        body = fwd.encode_body(
            fwd.request_body((i.event for i in items), batch.test_event_code), token
        )
        t0 = time.perf_counter()
        self.requests += 1
        try:
            async with self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            ) as r:
                raw = await r.read()
                outcome = fwd.classify(
                    r.status, r.headers.get("Retry-After"), raw, time.time(), self.secrets
                )
        except TimeoutError:
            outcome = fwd.transport_failure("timeout")
        except (aiohttp.ClientError, OSError):
            outcome = fwd.transport_failure("transport")
        metrics.FORWARD_REQUEST_SECONDS.observe(time.perf_counter() - t0)
        metrics.FORWARD_REQUESTS.labels(outcome.kind).inc()
        if outcome.kind != "ok":
            log.info(
                "request not accepted",
                extra={
                    "pixel_id": batch.pixel_id,
                    "events": len(items),
                    "outcome": outcome.kind,
                    "reason": outcome.reason,
                    "http_status": outcome.status,
                    "code": outcome.code,
                    "subcode": outcome.subcode,
                },
            )
        return outcome


def new_session(fw: Forward) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=fw.concurrency, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
    )


def count_rejected(rejected: list[Rejected]) -> None:
    for r in rejected:
        metrics.FORWARD_EVENTS_REJECTED.labels(r.reason).inc()
        if r.reason == "rejected":
            log.warning(
                "event rejected by Meta; dead-lettered",
                extra={
                    "offset": r.thing.offset,
                    "partition": r.thing.partition,
                    "code": r.outcome.code if r.outcome else None,
                    "subcode": r.outcome.subcode if r.outcome else None,
                },
            )
