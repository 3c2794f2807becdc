"""aiokafka helpers for the CLI (produce, demo, the worker's start-up) and the tests:
create topics, produce lines, read a topic. Not used on the worker's hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


def client_kwargs(s: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {"bootstrap_servers": s.bootstrap_servers}
    if s.security_protocol != "PLAINTEXT":
        import ssl

        kw["security_protocol"] = s.security_protocol
        if s.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = ssl.create_default_context(cafile=s.ssl_cafile)
        if s.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = s.sasl_mechanism
            kw["sasl_plain_username"] = s.sasl_username
            kw["sasl_plain_password"] = s.sasl_password
    return kw


async def create_topics(s: Settings, names: Iterable[str], partitions: int | None = None) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(s))
    await admin.start()
    try:
        for name in names:
            cfg = {"cleanup.policy": "compact"} if name == s.topics.catalog else {}
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions or s.partitions,
                            s.replication_factor,
                            topic_configs=cfg,
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def ensure_topics(
    s: Settings, wanted: dict[str, tuple[int, dict[str, str]]], timeout: float = 60.0
) -> None:
    """Create the topics of ``wanted`` (name -> (partitions, configs)) that are missing,
    then wait until a new client's metadata shows each.

    The worker calls this before its consumers join their groups: a group joined while
    the broker's metadata still lacked a topic leaves that topic's partitions
    unassigned until the client's next metadata refresh (5 minutes by default)."""
    admin = AIOKafkaAdminClient(**client_kwargs(s))
    await admin.start()
    try:
        for name, (partitions, cfg) in wanted.items():
            try:
                await admin.create_topics(
                    [NewTopic(name, partitions, s.replication_factor, topic_configs=cfg)]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
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
    finally:
        await producer.stop()
    return n


async def end_offsets(s: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_kwargs(s))
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
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
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, isolation_level=isolation_level, **client_kwargs(s)
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None, int, int]] = []
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
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
