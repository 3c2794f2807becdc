"""Raw server events through a real worker on a real broker to conversions.enriched."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from streams.settings import Settings, from_env
from tests.integration.conftest import all_topics

pytestmark = pytest.mark.integration


def server_message(i: int, n_events: int = 1) -> bytes:
    return orjson.dumps(
        {
            "received_at": 1795400000.0 + i,
            "pixel_id": "1234567890",
            "data": [
                {
                    "event_name": "Purchase",
                    "event_time": 1795399990 + i,
                    "event_id": f"order-{i}-{j}",
                    "action_source": "website",
                    "event_source_url": "https://shop.example/thanks",
                    "user_data": {
                        "em": f"buyer{i}.{j}@example.org",
                        "client_user_agent": "Mozilla/5.0",
                        "client_ip_address": "203.0.113.7",
                    },
                    "custom_data": {"value": 10 + i, "currency": "EUR"},
                }
                for j in range(n_events)
            ],
        }
    )


@pytest.mark.parametrize("ingest_process", ["yes", "no"])
def test_n_server_events_become_n_conversions(
    make_settings, start_worker, kafka, ingest_process: str
) -> None:
    """Ingest in its own process (metrics reach the worker's /metrics over the pipe)
    and in the worker's: the same outputs, the same counts."""
    s = make_settings(ingest_process=ingest_process)
    kafka.create_topics(s, all_topics(s))
    n_msgs, per_msg = 120, 3
    worker = start_worker(s)
    kafka.produce(s, s.topics.server_raw, [server_message(i, per_msg) for i in range(n_msgs)])

    n = n_msgs * per_msg
    got = kafka.read(s, s.topics.conversions, until_count=n, idle_timeout=15, max_wait=90)
    assert len(got) == n
    records = [orjson.loads(v) for _, v, _, _ in got]
    assert {r["event_id"] for r in records} == {
        f"order-{i}-{j}" for i in range(n_msgs) for j in range(per_msg)
    }
    for (key, _, _, _), rec in zip(got, records, strict=True):
        assert key == rec["conversion_id"].encode()
        assert len(rec["conversion_id"]) == 64
        assert rec["pixel_id"] == "1234567890"
        assert rec["event_name"] == "Purchase"
        assert rec["sources"] == ["server"]
        assert set(rec) >= {
            "event_time",
            "action_source",
            "user_data",
            "custom_data",
            "match_quality",
            "warnings",
            "received_at",
            "emitted_at",
            "dedup",
        }
    # nothing else came out
    assert kafka.read(s, s.topics.dead_letter, idle_timeout=1, max_wait=5) == []

    # the worker's /metrics counters moved by exactly what was sent
    worker.wait_metric("convstream_messages_in_total", n_msgs, source="server")
    assert worker.metric("convstream_messages_in_total", source="server") == n_msgs
    assert worker.metric("convstream_events_in_total", source="server") == n
    assert worker.metric("convstream_conversions_out_total", source="server") == n
    assert worker.metric("convstream_dead_letters_total") == 0


def test_bad_messages_are_dead_lettered_and_good_ones_still_flow(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings()
    kafka.create_topics(s, all_topics(s))
    start_worker(s)
    values = [b"\xff\xfe not json", server_message(1), b"[1,2]", b'{"no": "received_at"}']
    kafka.produce(s, s.topics.server_raw, values)

    conv = kafka.read(s, s.topics.conversions, until_count=1, idle_timeout=10, max_wait=60)
    dead = kafka.read(s, s.topics.dead_letter, until_count=3, idle_timeout=10, max_wait=60)
    assert len(conv) == 1
    assert len(dead) == 3
    letters = [orjson.loads(v) for _, v, _, _ in dead]
    assert all(d["errors"][0]["code"] == "malformed_message" for d in letters)
    raw = {(p, o): v for _, v, p, o in kafka.read(s, s.topics.server_raw, until_count=4)}
    # each dead letter points back at the bad message it came from
    assert sorted(raw[(d["partition"], d["offset"])] for d in letters) == sorted(
        [values[0], values[2], values[3]]
    )
    assert all(d["source_topic"] == s.topics.server_raw for d in letters)
    assert all(isinstance(d["offset"], int) and isinstance(d["partition"], int) for d in letters)


def test_raw_messages_larger_than_a_fetch_answer_per_partition_flow(
    make_settings, start_worker, kafka
) -> None:
    """The ingest loop asks for at most PARTITION_FETCH_BYTES per partition and answer;
    a raw message larger than that still arrives (the broker answers with the first
    batch whole), with every one of its events."""
    from agents.batchloop import PARTITION_FETCH_BYTES

    s = make_settings()
    kafka.create_topics(s, all_topics(s))
    per_msg = 1000  # the most events one message may carry (CAPI's limit)
    msgs = [server_message(i * per_msg, per_msg) for i in range(3)]
    assert min(len(m) for m in msgs) > PARTITION_FETCH_BYTES
    start_worker(s)
    kafka.produce(s, s.topics.server_raw, msgs)

    n = len(msgs) * per_msg
    got = kafka.read(s, s.topics.conversions, until_count=n, idle_timeout=20, max_wait=120)
    assert len(got) == n
    assert {orjson.loads(v)["event_id"] for _, v, _, _ in got} == {
        f"order-{i * per_msg}-{j}" for i in range(3) for j in range(per_msg)
    }
    assert kafka.read(s, s.topics.dead_letter, idle_timeout=1, max_wait=5) == []


def _read_with_librdkafka(s: Settings, topic: str, n: int) -> tuple[list[bytes], int]:
    """The first ``n`` values of ``topic`` read by librdkafka (confluent-kafka: the C
    client most non-Java consumers wrap), and the bytes it took off the wire for them
    (its statistics: every broker connection's received bytes)."""
    stats: list[dict[str, Any]] = []
    consumer = Consumer(
        {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": f"librdkafka-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "statistics.interval.ms": 100,
            "stats_cb": lambda raw: stats.append(orjson.loads(raw)),
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(values) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            values.append(value)
        seen = len(stats)
        while len(stats) < seen + 2:  # statistics taken after the last value came
            consumer.poll(0.1)
    finally:
        consumer.close()
    wire = sum(int(b["rxbytes"]) for b in stats[-1]["brokers"].values())
    return values, wire


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_outputs_are_compressed_as_set_and_a_c_client_reads_them(
    make_settings, start_worker, kafka, compression: str
) -> None:
    """CONVSTREAM_COMPRESSION (default zstd) compresses the record batches the worker
    writes: librdkafka reads the conversions, the same records aiokafka reads, in far
    fewer bytes than their values hold; with ``none`` the wire carries them whole."""
    s = make_settings(compression=compression)
    assert from_env({}).compression == "zstd"  # the default the other tests run with
    kafka.create_topics(s, all_topics(s))
    n_msgs, per_msg = 100, 3
    start_worker(s)
    kafka.produce(s, s.topics.server_raw, [server_message(i, per_msg) for i in range(n_msgs)])
    n = n_msgs * per_msg
    got = kafka.read(s, s.topics.conversions, until_count=n, idle_timeout=15, max_wait=90)
    assert len(got) == n

    values, wire = _read_with_librdkafka(s, s.topics.conversions, n)
    assert sorted(values) == sorted(v for _, v, _, _ in got)
    payload = sum(len(v) for v in values)
    if compression == "none":
        assert wire > payload
    else:
        assert wire < payload / 3, (wire, payload)
