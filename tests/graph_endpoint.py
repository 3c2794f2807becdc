"""A Graph-API-compatible ``POST /{version}/{pixel_id}/events`` for the tests and the
benchmark only (never a product default). It validates like Meta's Conversions API —
the access token per pixel, at most 1000 events, event_time at most 7 days old (else
the whole batch is rejected: code 100, subcode 2804003), only CAPI event fields, the
required fields per action_source — and injects faults on demand: plain 5xx, codes 1
and 2, 429 with Retry-After, code 613, timeouts, connection resets, slow answers.

Run in a thread (``GraphEndpoint.start()``), or as a process:
``python -m tests.graph_endpoint --port P --tokens 1=a,2=b``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

SEVEN_DAYS = 7 * 86_400
CAPI_FIELDS = frozenset(
    {
        "event_name",
        "event_time",
        "user_data",
        "custom_data",
        "event_source_url",
        "opt_out",
        "event_id",
        "action_source",
        "data_processing_options",
        "data_processing_options_country",
        "data_processing_options_state",
        "referrer_url",
        "customer_segmentation",
        "app_data",
        "original_event_data",
        "attribution_data",
        "messaging_channel",
    }
)
ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
FAULTS = ("http_500", "code_1", "code_2", "http_429", "code_613", "timeout", "reset", "slow")

Fault = str  # one of FAULTS
FaultPlan = Callable[[int, str], Fault | None]  # (request number, pixel) -> fault or None


def mixed_faults(rate: float, seed: int = 1, kinds: tuple[str, ...] = FAULTS) -> FaultPlan:
    """Each request fails with probability ``rate``, the kind drawn from ``kinds``."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def plan(n: int, pixel: str) -> Fault | None:
        with lock:
            return rng.choice(kinds) if rng.random() < rate else None

    return plan


def scripted(faults: list[Fault | None], then: FaultPlan | None = None) -> FaultPlan:
    """The n-th request gets ``faults[n]`` (None: answered normally); later ones what
    ``then`` says (default: none)."""

    def plan(n: int, pixel: str) -> Fault | None:
        if n < len(faults):
            return faults[n]
        return then(n, pixel) if then is not None else None

    return plan


@dataclass
class Request:
    at: float  # monotonic, when answered
    pixel: str
    events: int
    status: int
    kind: str  # ok, rejected, bad_token, or a fault name
    retry_after: float | None = None
    arrived: float = 0.0  # monotonic, when the request came in


@dataclass
class GraphEndpoint:
    tokens: dict[str, str]
    now: Callable[[], float] = time.time  # Meta's clock, for the 7-day rule
    faults: FaultPlan | None = None
    reject_event_ids: frozenset[str] = frozenset()  # events Meta rejects (code 100)
    retry_after: float = 1.0
    timeout_sleep: float = 5.0
    slow_sleep: float = 0.3
    port: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every body, as received
    keep_bodies: bool = True

    def __post_init__(self) -> None:
        self._n = 0
        self._arrived: dict[int, float] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- Meta's answers ----------------------------------------------------------------

    @staticmethod
    def _error(
        status: int, code: int, message: str, subcode: int | None = None, kind: str = ""
    ) -> web.Response:
        err: dict[str, Any] = {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "Atest" + str(random.randrange(10**9)),
        }
        if subcode is not None:
            err["error_subcode"] = subcode
        return web.Response(
            status=status, body=orjson.dumps({"error": err}), content_type="application/json"
        )

    def _validate(self, events: Any) -> tuple[int, int | None, str] | None:
        """(code, subcode, message) of the first problem of the batch, or None."""
        if not isinstance(events, list) or not events:
            return 100, None, "(#100) The parameter data is required"
        if len(events) > 1000:
            return 100, None, "(#100) You can send at most 1000 events per request"
        now = self.now()
        for i, ev in enumerate(events):
            if not isinstance(ev, dict):
                return 100, None, f"(#100) data[{i}] must be an object"
            unknown = sorted(set(ev) - CAPI_FIELDS)
            if unknown:
                return 100, 2804001, f"(#100) Invalid parameter data[{i}].{unknown[0]}"
            for name in ("event_name", "event_time", "action_source", "user_data"):
                if name not in ev:
                    return 100, 2804002, f"(#100) data[{i}]: the parameter {name} is required"
            et = ev["event_time"]
            if not isinstance(et, int) or et < now - SEVEN_DAYS:
                return 100, 2804003, f"(#100) data[{i}]: event_time is more than 7 days old"
            if ev["action_source"] not in ACTION_SOURCES:
                return 100, 2804004, f"(#100) data[{i}]: invalid action_source"
            ud = ev["user_data"]
            if not isinstance(ud, dict) or not ud:
                return 100, 2804005, f"(#100) data[{i}]: user_data needs a customer parameter"
            if ev["action_source"] == "website" and not (
                ev.get("event_source_url") and ud.get("client_user_agent")
            ):
                return (
                    100,
                    2804006,
                    f"(#100) data[{i}]: website events need event_source_url and client_user_agent",
                )
            if ev.get("event_id") in self.reject_event_ids:
                return 100, 2804007, f"(#100) data[{i}]: invalid custom_data value"
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        pixel = request.match_info["pixel"]
        with self._lock:
            n = self._n
            self._n += 1
            self._arrived[n] = time.monotonic()
        raw = await request.read()
        body: Any
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            body = dict(form)
            if "data" in body:
                body["data"] = orjson.loads(body["data"])
        else:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        if not isinstance(body, dict):
            return self._log(self._error(400, 100, "(#100) body is not JSON"), n, pixel, 0, "bad")
        events = body.get("data")
        count = len(events) if isinstance(events, list) else 0
        if self.keep_bodies:
            self.bodies.append({"pixel": pixel, **body})
        fault = self.faults(n, pixel) if self.faults is not None else None
        if fault is not None:
            resp = await self._fault(fault, request)
            if resp is None:  # slow: then answer normally
                await asyncio.sleep(self.slow_sleep)
            else:
                ra = resp.headers.get("Retry-After")
                return self._log(resp, n, pixel, count, fault, float(ra) if ra else None)
        token = body.get("access_token") or request.query.get("access_token")
        auth = request.headers.get("Authorization", "")
        if not token and auth.split(" ")[0] in ("Bearer", "OAuth"):
            token = auth.split(" ", 1)[1]
        if pixel not in self.tokens or token != self.tokens[pixel]:
            resp = self._error(400, 190, "Invalid OAuth access token - Cannot parse access token")
            return self._log(resp, n, pixel, count, "bad_token")
        problem = self._validate(events)
        if problem is not None:
            code, sub, msg = problem
            return self._log(self._error(400, code, msg, sub), n, pixel, count, "rejected")
        tec = body.get("test_event_code")
        for ev in events:
            self.accepted.append({"pixel": pixel, "test_event_code": tec, "event": ev})
        resp = web.json_response(
            {"events_received": count, "messages": [], "fbtrace_id": f"Aok{n}"}
        )
        return self._log(resp, n, pixel, count, "ok")

    async def _fault(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        ra = {"Retry-After": f"{self.retry_after:g}"}
        if fault == "http_500":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "code_1":
            return self._error(500, 1, "An unknown error occurred")
        if fault == "code_2":
            return self._error(503, 2, "Service temporarily unavailable")
        if fault == "http_429":
            return web.Response(status=429, text="Too Many Requests", headers=ra)
        if fault == "code_613":
            resp = self._error(400, 613, "Calls to this api have exceeded the rate limit.")
            resp.headers.update(ra)
            return resp
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep)
            return web.Response(status=504, text="late")
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500, text="reset")
        if fault == "slow":
            return None
        raise ValueError(f"unknown fault {fault!r}")

    def _log(
        self,
        resp: web.StreamResponse,
        n: int,
        pixel: str,
        count: int,
        kind: str,
        retry_after: float | None = None,
    ) -> web.StreamResponse:
        self.requests.append(
            Request(
                time.monotonic(),
                pixel,
                count,
                resp.status,
                kind,
                retry_after,
                self._arrived.pop(n, 0.0),
            )
        )
        return resp

    # --- running -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/{pixel}/events", self._handle)
        return app

    async def serve(self) -> None:
        if self.port == 0:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = int(sock.getsockname()[1])
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()

    def start(self) -> GraphEndpoint:
        """Serve in a background thread; returns once it listens."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", required=True, help="pixel=token,...")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--now", type=float, help="Meta's clock (default: the real one)")
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--timeout-sleep", type=float, default=5.0)
    p.add_argument("--slow-sleep", type=float, default=0.3)
    args = p.parse_args()
    tokens = dict(item.split("=", 1) for item in args.tokens.split(","))
    ep = GraphEndpoint(
        tokens,
        now=(lambda: args.now) if args.now else time.time,
        faults=mixed_faults(args.fault_rate) if args.fault_rate else None,
        retry_after=args.retry_after,
        timeout_sleep=args.timeout_sleep,
        slow_sleep=args.slow_sleep,
        port=args.port,
        keep_bodies=False,
    )

    async def forever() -> None:
        await ep.serve()
        print(f"listening on {ep.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(forever())


if __name__ == "__main__":
    main()
