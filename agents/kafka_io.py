"""aiokafka helpers for the CLI (produce, demo, the worker's start-up) and the tests:
create topics, produce lines, read a topic, check a principal's access before the
worker starts, a consumer group's committed offsets (agents/progress.py, once per
partition without stored progress). Not used on the worker's hot path.

A failure the user must fix (credentials, TLS trust, ACLs) raises :class:`KafkaSetupError`
with one line naming the setting or the missing ACL, never a secret."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from streams.settings import KafkaSetupError, Settings

# Kafka error codes (the protocol's)
_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29


def client_kwargs(s: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {"bootstrap_servers": s.bootstrap_servers}
    if s.security_protocol != "PLAINTEXT":
        kw["security_protocol"] = s.security_protocol
        if s.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = ssl.create_default_context(cafile=s.ssl_cafile)
        if s.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = s.sasl_mechanism
            kw["sasl_plain_username"] = s.sasl_username
            kw["sasl_plain_password"] = s.sasl_password
    return kw


def _principal(s: Settings) -> str:
    if s.security_protocol.startswith("SASL"):
        return f"user {s.sasl_username!r}"
    return "this client"


def explain_connect_error(s: Settings, errors: list[BaseException]) -> str:
    """One line saying why no bootstrap server could be used (``errors``: what each
    connection attempt raised, last one last). aiokafka's messages hold no secret."""
    bs = f"KAFKA_BOOTSTRAP_SERVERS={s.bootstrap_servers}"
    for e in reversed(errors):
        if isinstance(e, SaslAuthenticationFailed):
            return (
                f"Kafka rejected the SASL credentials of {_principal(s)} (mechanism "
                f"{s.sasl_mechanism}) at {bs}: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD "
                "and KAFKA_SASL_MECHANISM"
            )
        if isinstance(e, UnsupportedSaslMechanismError):
            return f"the broker at {bs} does not offer KAFKA_SASL_MECHANISM={s.sasl_mechanism}"
        if isinstance(e, ssl.SSLCertVerificationError):
            ca = s.ssl_cafile or "unset: the system's CAs"
            return (
                f"TLS: the certificate of the broker at {bs} is not trusted "
                f"({e.verify_message}); KAFKA_SSL_CAFILE ({ca}) must hold the CA that signed it"
            )
        if isinstance(e, ssl.SSLError):
            return (
                f"TLS handshake with the broker at {bs} failed ({e.reason}): does that "
                f"listener speak KAFKA_SECURITY_PROTOCOL={s.security_protocol}?"
            )
    detail = f" ({type(errors[-1]).__name__}: {errors[-1]})" if errors else ""
    return (
        f"cannot connect to Kafka at {bs} with KAFKA_SECURITY_PROTOCOL="
        f"{s.security_protocol}{detail}"
    )


class _ConnectErrors(logging.Handler):
    """Collects the exceptions aiokafka logs when a bootstrap connection fails (its
    start() then raises only "Unable to bootstrap from ...")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            self.errors.extend(a for a in record.args if isinstance(a, BaseException))


@contextlib.asynccontextmanager
async def _connect_errors(s: Settings) -> AsyncIterator[None]:
    """Translate a failed bootstrap into a :class:`KafkaSetupError`; aiokafka's own
    error lines are held back meanwhile (the one-line error says it all)."""
    log = logging.getLogger("aiokafka")
    handler, propagate = _ConnectErrors(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    except KafkaConnectionError:
        raise KafkaSetupError(explain_connect_error(s, handler.errors)) from None
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


@contextlib.asynccontextmanager
async def admin_client(s: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_kwargs(s))
    async with _connect_errors(s):
        await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def _denied(s: Settings, what: str) -> KafkaSetupError:
    return KafkaSetupError(f"Kafka denied {_principal(s)} {what} (see README 'Secured Kafka')")


async def _create_missing(
    s: Settings, admin: AIOKafkaAdminClient, wanted: dict[str, tuple[int, dict[str, str]]]
) -> None:
    """Create the topics of ``wanted`` the principal cannot see; an existing topic is
    left alone (creating it would need the Create ACL, a producer lacks it)."""
    # all topics the principal may see: a metadata request naming a topic would create
    # it (aiokafka asks for auto-creation) with the broker's default partitions
    seen = set(await admin.list_topics())
    denied: list[str] = []
    for name, (partitions, cfg) in wanted.items():
        if name in seen:
            continue
        resp = await admin.create_topics(
            [NewTopic(name, partitions, s.replication_factor, topic_configs=cfg)]
        )
        for err in resp.topic_errors:
            code = err[1]
            if code in (0, _TOPIC_ALREADY_EXISTS):
                continue
            if code == _TOPIC_AUTHORIZATION_FAILED:
                denied.append(name)
                continue
            msg = err[2] if len(err) > 2 and err[2] else f"error code {code}"
            raise KafkaSetupError(f"cannot create topic {name!r}: {msg}")
    if denied:
        raise _denied(s, f"creating or describing topic(s) {', '.join(denied)}")


async def create_topics(s: Settings, names: Iterable[str], partitions: int | None = None) -> None:
    """Create the missing topics of ``names`` (the catalog compacted)."""
    wanted = {
        name: (
            partitions or s.partitions,
            {"cleanup.policy": "compact"} if name == s.topics.catalog else {},
        )
        for name in names
    }
    async with admin_client(s) as admin:
        await _create_missing(s, admin, wanted)


async def _may_use_group(admin: AIOKafkaAdminClient, group: str, timeout: float = 30.0) -> bool:
    """Is the principal allowed to use ``group``? (FindCoordinator needs Describe on it;
    a fresh cluster answers "not available" until its offsets topic exists.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await admin.find_coordinator(group)
            return True
        except GroupAuthorizationFailedError:
            return False
        except KafkaError as e:
            if not e.retriable or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def check_access(
    s: Settings, reads: Iterable[str], writes: Iterable[str], groups: Iterable[str]
) -> None:
    """Before the worker starts: may the principal see the topics it reads and writes,
    and use its consumer groups? (Kafka answers a denied topic or group with an error
    the consumer would only retry: a silent stall.) Raises KafkaSetupError naming what
    is missing."""
    reads, writes = list(reads), list(writes)
    async with admin_client(s) as admin:
        seen = set(await admin.list_topics())
        # a topic not listed is missing or denied; naming it says which (and creates a
        # missing one where the broker auto-creates, as the worker's consumers would)
        absent = [t for t in reads + writes if t not in seen]
        described = await admin.describe_topics(absent) if absent else []
        codes = {t["topic"]: t["error_code"] for t in described}
        no_read = [t for t in reads if codes.get(t) == _TOPIC_AUTHORIZATION_FAILED]
        no_write = [t for t in writes if codes.get(t) == _TOPIC_AUTHORIZATION_FAILED]
        no_group = [g for g in groups if not await _may_use_group(admin, g)]
    missing = []
    if no_read:
        missing.append(f"Read on topic(s) {', '.join(no_read)}")
    if no_write:
        missing.append(f"Write on topic(s) {', '.join(no_write)}")
    if no_group:
        missing.append(f"Read on consumer group(s) {', '.join(no_group)}")
    if missing:
        raise _denied(s, f"access: it needs {'; '.join(missing)}")


async def ensure_topics(
    s: Settings, wanted: dict[str, tuple[int, dict[str, str]]], timeout: float = 60.0
) -> None:
    """Create the topics of ``wanted`` (name -> (partitions, configs)) that are missing,
    then wait until a new client's metadata shows each.

    The worker calls this before its consumers join their groups: a group joined while
    the broker's metadata still lacked a topic leaves that topic's partitions
    unassigned until the client's next metadata refresh (5 minutes by default)."""
    async with admin_client(s) as admin:
        await _create_missing(s, admin, wanted)
    consumer = AIOKafkaConsumer(**client_kwargs(s))
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            known = await consumer.topics()  # a fresh metadata request
            missing = [n for n in wanted if n not in known]
            if not missing:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"topics missing from the broker's metadata: {missing}")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def produce(
    s: Settings, topic: str, values: Iterable[bytes], keys: Iterable[bytes | None] | None = None
) -> int:
    producer = AIOKafkaProducer(linger_ms=5, max_batch_size=256 * 1024, **client_kwargs(s))
    async with _connect_errors(s):
        await producer.start()
    n = 0
    try:
        futs = []
        key_iter = iter(keys) if keys is not None else None
        for v in values:
            k = next(key_iter) if key_iter is not None else None
            futs.append(await producer.send(topic, v, key=k))
            n += 1
            if len(futs) >= 10_000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    except TopicAuthorizationFailedError:
        raise _denied(s, f"writing to topic {topic} (it needs Write on it)") from None
    finally:
        await producer.stop()
    return n


async def committed_offsets(
    s: Settings, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offsets ``group`` committed for ``tps`` (a partition it never committed is
    left out), as the broker's group coordinator has them."""
    async with admin_client(s) as admin:
        got = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    return {
        TopicPartition(tp.topic, tp.partition): m.offset for tp, m in got.items() if m.offset >= 0
    }


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    """The partitions of ``topic`` as the cluster has them now (a fresh metadata request),
    [] when it does not exist or the principal cannot see it. All topics are listed first:
    a metadata request naming a missing topic would create it where the broker
    auto-creates topics."""
    if topic not in await admin.list_topics():
        return []
    for t in await admin.describe_topics([topic]):
        if t["topic"] == topic and t["error_code"] == 0:
            return sorted(p["partition"] for p in t["partitions"])
    return []


async def end_offsets(s: Settings, topic: str) -> dict[int, int]:
    async with admin_client(s) as admin:
        parts = await topic_partitions(admin, topic)
    consumer = AIOKafkaConsumer(**client_kwargs(s))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read(
    s: Settings,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    until_count: int | None = None,
    idle_timeout: float = 3.0,
    max_wait: float = 60.0,
    isolation_level: str = "read_uncommitted",
) -> list[tuple[bytes | None, bytes | None, int, int]]:
    """Read (key, value, partition, offset) from ``start`` offsets (default: beginning)
    until ``until_count`` records were read, or nothing came for ``idle_timeout`` s."""
    async with admin_client(s) as admin:
        parts = await topic_partitions(admin, topic)
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, isolation_level=isolation_level, **client_kwargs(s)
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None, int, int]] = []
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            off = (start or {}).get(tp.partition)
            if off is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, off)
        loop = asyncio.get_running_loop()
        t_end = loop.time() + max_wait
        last = loop.time()
        while loop.time() < t_end:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = [r for recs in batch.values() for r in recs]
            if got:
                last = loop.time()
                out.extend((r.key, r.value, r.partition, r.offset) for r in got)
                if until_count is not None and len(out) >= until_count:
                    break
            elif loop.time() - last > idle_timeout:
                break
    finally:
        await consumer.stop()
    return out
