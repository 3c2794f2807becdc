"""The Faust application: the only module (with topics.py) that imports Faust.

``create_app`` builds the App from :class:`Settings`, declares the topics and wires
the agents and web views; nothing here is a module global, so tests and benchmarks
can build several apps with different settings in one process.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.serializers import codecs

from streams.runtime import TRIM_INTERVAL, trim_malloc
from streams.settings import Settings


class OrjsonCodec(codecs.Codec):  # type: ignore[misc]
    """JSON values through orjson (the app's default value codec)."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register("orjson", OrjsonCodec())


@dataclass(frozen=True, slots=True)
class Wiring:
    """What ``create_app`` built; tests reach the topics through it."""

    app: faust.App
    topics: Any  # streams.topics.AppTopics

    def internal_topics(self) -> dict[str, tuple[int, dict[str, str]]]:
        """The topics the worker owns (stage inputs, table changelogs): name ->
        (partitions, topic configs), for ``kafka_io.ensure_topics`` before it starts."""
        out: dict[str, tuple[int, dict[str, str]]] = {}
        for topic in (self.topics.candidates_internal, self.topics.attribution_internal):
            out[topic.get_topic_name()] = (int(topic.partitions), {})
        for table in self.app.tables.values():
            if table.is_global:
                continue  # the ads catalog's topic is a user topic (SPEC §1)
            name = table.changelog_topic.get_topic_name()
            out[name] = (int(table.partitions), {"cleanup.policy": "compact"})
        return out


def _credentials(s: Settings) -> Any:
    if s.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if s.security_protocol in ("SSL", "SASL_SSL"):
        ssl_context = ssl.create_default_context(cafile=s.ssl_cafile)
    if s.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password,
            mechanism=s.sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def create_app(settings: Settings) -> Wiring:
    # agents import Faust; keep the core import-light
    from agents import attribution, catalog, dedupe, ingest, web
    from streams.topics import declare

    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # a standby keeps a warm copy of another worker's table partitions (it reads
        # their changelogs), so it takes them over without a full restore
        table_standby_replicas=settings.standby_replicas,
        key_serializer="raw",
        value_serializer="orjson",
        consumer_auto_offset_reset="earliest",
        # throughput: bigger fetches and producer batches (see bench/e2e.py)
        broker_max_poll_records=max(500, settings.batch_size),
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        loghandlers=[],
    )
    topics = declare(app, settings)
    ingest_state = ingest.register(app, settings)
    dedupe.register(app, topics, settings, ingest_state)
    catalog_state = catalog.register(app, settings, ingest_state)
    attribution.register(app, topics, settings, ingest_state, catalog_state)
    stage_topics = frozenset(
        t.get_topic_name() for t in (topics.candidates_internal, topics.attribution_internal)
    )
    web.register(app, ingest_state, catalog_state, stage_topics)

    async def trim() -> None:  # the heap's free pages back to the system (RSS)
        trim_malloc()

    app.timer(TRIM_INTERVAL, name="malloc_trim")(trim)

    return Wiring(app=app, topics=topics)
