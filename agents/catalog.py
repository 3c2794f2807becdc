"""``ads.catalog`` → a global table: every worker reads every partition of the compacted
topic from the beginning (no consumer group) into a :class:`streams.catalog.Catalog`.

Why not a Faust ``GlobalTable``: it keeps its own changelog topic (a second copy of the
catalog) or, pointed at ``ads.catalog`` as its changelog, would write into our input
topic; and it would hold raw JSON, where we keep each ad parsed and resolved once. The
catalog is small (ads, not events), so a plain consumer and a dict are the global
table here. A malformed record is dead-lettered (``invalid_ad``, the field named) and
the ad keeps its previous version. The worker is ready (``/readyz``) and attribution
starts only once the records present at start-up are loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from agents.failfast import die
from agents.kafka_io import client_kwargs, topic_partitions
from agents.outputs import Outputs
from streams import metrics, records
from streams.catalog import Catalog
from streams.model import Origin
from streams.settings import Settings

log = logging.getLogger("convstream.catalog")


class CatalogState:
    def __init__(self) -> None:
        self.catalog = Catalog()
        self.loaded = asyncio.Event()  # the records present at start-up are applied


def register(app: Any, settings: Settings, producer_holder: Any) -> CatalogState:
    state = CatalogState()
    topic = settings.topics.catalog

    @app.service
    class CatalogReader(Service):  # type: ignore[misc]
        consumer: AIOKafkaConsumer
        admin: AIOKafkaAdminClient  # the topic's partitions (public metadata requests)

        async def on_start(self) -> None:
            self.consumer = AIOKafkaConsumer(
                enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(settings)
            )
            self.admin = AIOKafkaAdminClient(**client_kwargs(settings))
            await self.consumer.start()
            await self.admin.start()

        async def on_stop(self) -> None:
            await self.admin.close()
            await self.consumer.stop()

        @Service.task
        async def _read(self) -> None:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                die("catalog", exc)

        async def _partitions(self) -> list[TopicPartition]:
            while not self.should_stop:
                parts = await topic_partitions(self.admin, topic)
                if parts:
                    return [TopicPartition(topic, p) for p in parts]
                # no catalog topic (yet): nothing to wait for at start-up
                state.loaded.set()
                await asyncio.sleep(5)
            return []

        async def _run(self) -> None:
            tps = await self._partitions()
            if not tps:
                return
            self.consumer.assign(tps)
            await self.consumer.seek_to_beginning(*tps)
            end = await self.consumer.end_offsets(tps)
            outputs: Outputs | None = None
            while not self.should_stop:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=1000)
                dead: list[tuple[str, bytes, bytes | None]] = []
                for tp, recs in batch.items():
                    for r in recs:
                        error = state.catalog.apply(r.key, r.value)
                        if error is not None:
                            metrics.CATALOG_REJECTED.inc()
                            metrics.DEAD_LETTERS.labels("catalog", error.code).inc()
                            metrics.ERRORS.labels(error.code).inc()
                            origin = Origin(tp.topic, tp.partition, r.offset)
                            dl = records.dead_letter(origin, errors=[error], now=time.time())
                            key = records.dead_letter_key(origin, None)
                            dead.append((settings.topics.dead_letter, key, orjson.dumps(dl)))
                if dead:
                    if outputs is None:
                        await producer_holder.producer_ready.wait()
                        outputs = Outputs(producer_holder.producer, "", "")
                    await outputs.send_all(dead)
                metrics.CATALOG_ADS.set(len(state.catalog))
                if not state.loaded.is_set() and await self._caught_up(end):
                    log.info("catalog loaded", extra={"ads": len(state.catalog)})
                    state.loaded.set()

        async def _caught_up(self, end: dict[TopicPartition, int]) -> bool:
            for tp, offset in end.items():
                if await self.consumer.position(tp) < offset:
                    return False
            return True

    return state
