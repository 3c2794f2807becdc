"""``convstream collect``: the HTTP edge (aiohttp) and the Kafka edge (aiokafka) of the
collector. Requests are parsed by streams.collect; this module only moves bytes.

A request is answered 2xx only once Kafka acknowledged its message (acks=all,
idempotent producer). Concurrent requests share the producer's batches (linger). When
Kafka does not acknowledge within the ack timeout, or more messages than the pending
bound wait for their ack, the answer is 503 with ``Retry-After``. Queries, bodies and
tokens are never logged: the access log is off and log lines carry codes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.kafka_io import client_kwargs, create_topics
from streams import collect as core
from streams import metrics as m
from streams.settings import Settings

log = logging.getLogger("convstream.collect")

# errors after which an aiokafka producer does not recover (its sender stopped, or the
# idempotence state is gone): a new producer (new producer id) replaces it
_FATAL = (OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId, InvalidProducerEpoch,
          ProducerClosed)  # fmt: skip

SANDBOX_PATH = "/privacy_sandbox/pixel/register/trigger"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
}


class RedactHttpErrors(logging.Filter):
    """aiohttp logs a malformed request with the bytes it choked on (raw queries, bodies,
    tokens): keep the record, drop those bytes, name only the exception class."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None or record.args:
            kind = type(exc).__name__ if exc is not None else "error"
            base = str(record.msg).split(" from ", 1)[0].split(":", 1)[0]
            record.msg = f"{base} ({kind}; request data not logged)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RateLimit(logging.Filter):
    """At most one record per message template per ``every`` seconds (aiokafka logs a
    failed metadata refresh in a tight loop while a broker is down)."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        if now - self.last.get(key, -self.every) < self.every:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


def quiet_logs() -> None:
    """Request bytes out of aiohttp's log lines; aiokafka's retry loop rate-limited."""
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal"):
        logging.getLogger(name).addFilter(RedactHttpErrors())
    limit = RateLimit()
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.sender"):
        logging.getLogger(name).addFilter(limit)


class KeyPartitioner:
    """aiokafka's default partitioning (murmur2 of the key, like the Java client), with
    the hash of each key remembered: keys are pixel ids, a handful that repeat."""

    def __init__(self) -> None:
        self._fallback = DefaultPartitioner()
        self._hash: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._fallback(key, all_partitions, available))
        h = self._hash.get(key)
        if h is None:
            h = murmur2(key) & 0x7FFFFFFF
            if len(self._hash) > 100_000:
                self._hash.clear()
            self._hash[key] = h
        return all_partitions[h % len(all_partitions)]


class KafkaWriter:
    """One idempotent producer; ``write`` returns None once acked, else a GraphError.

    While Kafka is failing (the last outcome was an error) only one request at a time
    probes it; the others get a 503 at once instead of piling up on the producer. A
    producer that hit a fatal error, or got no ack for ``3 x ack timeout``, is replaced."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.producer: AIOKafkaProducer | None = None
        self.pending = 0
        self.last_ack = 0.0
        self.last_error = 0.0
        self._probing = False
        self._task: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        m.COLLECT_PENDING.set_function(lambda: self.pending)

    @property
    def up(self) -> bool:
        return self.producer is not None and self.last_ack >= self.last_error

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        """Start the producer, retrying while Kafka is unreachable (requests get 503)."""
        s = self.s
        while self.producer is None:
            producer = AIOKafkaProducer(
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                max_batch_size=512 * 1024,
                max_request_size=s.collect_max_body + 64 * 1024,
                request_timeout_ms=int(max(s.collect_ack_timeout, 5.0) * 1000),
                retry_backoff_ms=200,
                partitioner=KeyPartitioner(),
                **client_kwargs(s),
            )
            try:
                await producer.start()
            except Exception as e:  # KafkaError, OSError, ssl errors: keep trying, answer 503
                log.warning("kafka not reachable; retrying", extra={"error": type(e).__name__})
                with contextlib.suppress(Exception):
                    await producer.stop()
                self.last_error = time.monotonic()
                m.COLLECT_KAFKA_UP.set(0)
                await asyncio.sleep(1.0)
                continue
            try:
                await create_topics(s, [s.topics.pixel_raw, s.topics.server_raw])
            except Exception as e:  # e.g. no permission: the topics must exist already
                log.warning("could not create raw topics", extra={"error": type(e).__name__})
            self.producer = producer
            self.last_ack = time.monotonic()
            m.COLLECT_KAFKA_UP.set(1)
            log.info("producer connected", extra={"bootstrap": s.bootstrap_servers})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.producer is not None:
            await self.producer.stop()  # flushes what is pending

    async def write(self, topic: str, key: bytes | None, value: bytes) -> core.GraphError | None:
        producer = self.producer
        if producer is None:
            return core.unavailable("kafka_unavailable", 1)
        if self.pending >= self.s.collect_max_pending:
            return core.unavailable("backpressure", 1)
        probe = not self.up
        if probe:
            if self._probing:
                return core.unavailable("kafka_unavailable", 1)
            self._probing = True
        self.pending += 1
        try:
            async with asyncio.timeout(self.s.collect_ack_timeout):
                fut = await producer.send(topic, value, key=key)
                fut.add_done_callback(_retrieve)
                # shielded: a timeout here must not cancel the batch other requests share
                await asyncio.shield(fut)
        except TimeoutError:
            self._failed(producer, None)
            return core.unavailable("kafka_timeout", 2)
        except MessageSizeTooLargeError:
            return core.too_large(self.s.collect_max_body)
        except KafkaError as e:
            self._failed(producer, e)
            return core.unavailable("kafka_unavailable", 2)
        except Exception as e:  # a client bug: the request may be retried; never a 2xx
            log.error("unexpected producer error", extra={"error": type(e).__name__})
            self._failed(producer, None)
            return core.unavailable("kafka_unavailable", 2)
        finally:
            self.pending -= 1
            if probe:
                self._probing = False
        if probe:
            m.COLLECT_KAFKA_UP.set(1)
        self.last_ack = time.monotonic()
        return None

    def _failed(self, producer: AIOKafkaProducer, error: KafkaError | None) -> None:
        now = time.monotonic()
        if self.up:
            log.warning(
                "kafka write failed; answering 503 until it acknowledges again",
                extra={"error": type(error).__name__ if error else "ack_timeout"},
            )
        self.last_error = now
        m.COLLECT_KAFKA_UP.set(0)
        stuck = now - self.last_ack > 3 * self.s.collect_ack_timeout
        if producer is self.producer and (isinstance(error, _FATAL) or stuck):
            log.warning(
                "replacing the producer",
                extra={"error": type(error).__name__ if error else "no_ack"},
            )
            self.producer = None
            self.last_ack = now  # the new producer gets its own 3 x ack timeout
            task = asyncio.create_task(_retire(producer))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            self._task = asyncio.create_task(self._connect())


# bound metric children (labels() costs a lock and a dict lookup per call)
@functools.cache
def _requests(endpoint: str, status: int) -> Any:
    return m.COLLECT_REQUESTS.labels(endpoint, str(status))


@functools.cache
def _seconds(endpoint: str) -> Any:
    return m.COLLECT_SECONDS.labels(endpoint)


@functools.cache
def _messages(source: str) -> Any:
    return m.COLLECT_MESSAGES.labels(source)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a delivery outcome seen (its request may have timed out and left)."""
    if not fut.cancelled():
        fut.exception()


async def _retire(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await producer.stop()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Collector:
    """The aiohttp application of ``convstream collect``."""

    def __init__(self, s: Settings, writer: KafkaWriter | None = None) -> None:
        self.s = s
        self.writer = writer or KafkaWriter(s)
        self.trusted = core.TrustedProxies(s.collect_trusted_proxies)
        self.tokens = core.token_table(s.collect_tokens)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.s.collect_max_body)
        app.router.add_route("*", "/healthz", self.healthz)
        app.router.add_route("*", "/readyz", self.readyz)
        app.router.add_route("*", "/metrics", self.metrics)
        app.router.add_route("*", "/tr", self.pixel)
        app.router.add_route("*", "/tr/", self.pixel)
        app.router.add_route("*", SANDBOX_PATH, self.sandbox)
        app.router.add_route("*", SANDBOX_PATH + "/", self.sandbox)
        app.router.add_route("*", "/{tail:.*}", self.capi)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await self.writer.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.writer.stop()

    # --- answers -----------------------------------------------------------------

    @staticmethod
    def _refuse(endpoint: str, err: core.GraphError, t0: float) -> web.Response:
        trace = core.new_trace_id()
        headers = {"x-fb-trace-id": trace, **_CORS}
        if err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after)
        m.COLLECT_REJECTED.labels(endpoint, err.reason).inc()
        return Collector._done(
            endpoint,
            t0,
            web.Response(
                status=err.status,
                body=err.body(trace),
                content_type="application/json",
                headers=headers,
            ),
        )

    @staticmethod
    def _done(endpoint: str, t0: float, resp: web.Response) -> web.Response:
        _requests(endpoint, resp.status).inc()
        _seconds(endpoint).observe(time.perf_counter() - t0)
        return resp

    async def _body(self, request: web.Request) -> bytes | core.GraphError:
        length = request.content_length
        if length is not None and length > self.s.collect_max_body:
            return core.too_large(self.s.collect_max_body)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return core.too_large(self.s.collect_max_body)

    # --- ops -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.writer.up
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(m.COLLECT_REGISTRY)
        return web.Response(body=body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # --- the pixel (SPEC §2.1) ------------------------------------------------------

    async def sandbox(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        m.COLLECT_PRIVACY_SANDBOX.inc()
        if request.method == "GET":
            resp = web.Response(body=core.GIF, content_type="image/gif", headers=_CORS)
        else:
            resp = web.Response(status=204, headers=_CORS)
        return self._done("privacy_sandbox", t0, resp)

    async def pixel(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        received_at = time.time()
        if request.method == "OPTIONS":
            return self._done("pixel", t0, web.Response(status=204, headers=_CORS))
        if request.method not in ("GET", "POST"):
            return self._refuse("pixel", core.method_not_allowed(), t0)
        url_query = request.raw_path.partition("?")[2].partition("#")[0]
        body: bytes | None = None
        if request.method == "POST":
            if request.content_type == "multipart/form-data":
                got = await self._multipart(request)
                if isinstance(got, core.GraphError):
                    return self._refuse("pixel", got, t0)
                body = got
            else:
                raw = await self._body(request)
                if isinstance(raw, core.GraphError):
                    return self._refuse("pixel", raw, t0)
                body = raw
        query = core.pixel_query(url_query, body)
        if isinstance(query, core.GraphError):
            return self._refuse("pixel", query, t0)
        ip = core.client_ip(
            request.remote, request.headers.getall("X-Forwarded-For", []), self.trusted
        )
        value = core.pixel_message(received_at, ip, request.headers.get("User-Agent"), query)
        err = await self.writer.write(self.s.topics.pixel_raw, core.pixel_key(query), value)
        if err is not None:
            return self._refuse("pixel", err, t0)
        _messages("browser").inc()
        if request.method == "GET":
            resp = web.Response(body=core.GIF, content_type="image/gif", headers=_CORS)
        else:
            resp = web.Response(status=204, headers=_CORS)
        return self._done("pixel", t0, resp)

    async def _multipart(self, request: web.Request) -> bytes | core.GraphError:
        length = request.content_length
        if length is not None and length > self.s.collect_max_body:
            return core.too_large(self.s.collect_max_body)
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return core.too_large(self.s.collect_max_body)
        except (ValueError, UnicodeDecodeError, AssertionError):
            return core.invalid("The multipart body cannot be read.")
        fields = [(k, v) for k, v in form.items() if isinstance(v, str)]
        return core.form_query(fields).encode()

    # --- the Conversions API (SPEC §2.2) -----------------------------------------------

    async def capi(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        received_at = time.time()
        segments = [p for p in request.path.split("/") if p]
        pixel_id = core.capi_path(segments)
        if pixel_id is None:
            return self._refuse("other", core.not_found(), t0)
        if request.method != "POST":
            return self._refuse("capi", core.method_not_allowed(), t0)
        body = await self._body(request)
        if isinstance(body, core.GraphError):
            return self._refuse("capi", body, t0)
        req = core.capi_request(
            pixel_id,
            body,
            request.headers.get("Content-Type", ""),
            request.query,
            request.headers.get("Authorization"),
        )
        if isinstance(req, core.GraphError):
            return self._refuse("capi", req, t0)
        if not core.token_ok(self.tokens, pixel_id, req.token):
            return self._refuse("capi", core.bad_token(), t0)
        value = core.server_message(received_at, req)
        if len(value) > self.s.collect_max_body + 32 * 1024:
            return self._refuse("capi", core.too_large(self.s.collect_max_body), t0)
        err = await self.writer.write(self.s.topics.server_raw, pixel_id.encode(), value)
        if err is not None:
            return self._refuse("capi", err, t0)
        _messages("server").inc()
        m.COLLECT_EVENTS.inc(req.events)
        trace = core.new_trace_id()
        resp = web.Response(
            body=core.success_body(req.events, trace),
            content_type="application/json",
            headers={"x-fb-trace-id": trace},
        )
        return self._done("capi", t0, resp)


def run(s: Settings) -> None:
    """Serve until SIGINT/SIGTERM (aiohttp's run_app handles both)."""
    quiet_logs()
    collector = Collector(s)
    log.info(
        "collector listening",
        extra={"host": s.collect_host, "port": s.collect_port, "pixels": len(collector.tokens)},
    )
    web.run_app(
        collector.app(),
        host=s.collect_host,
        port=s.collect_port,
        access_log=None,  # the access log would write raw queries (PII, tokens)
        print=None,
        handle_signals=True,
        shutdown_timeout=10.0,
    )
