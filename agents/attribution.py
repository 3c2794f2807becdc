"""Attribution (SPEC §8): ``conversions.enriched`` → repartition by fbclid → landing
table + catalog → ``conversions.attribution_candidates``.

Two stages:

- **route** (a plain aiokafka loop, agents/batchloop.py, like ingest) reads
  ``conversions.enriched`` and writes one small message per distinct fbclid of a
  conversion (``streams.attribution.route``) to ``<app_id>-attribution-in``, keyed by
  the fbclid, so a landing hit and every lookup of it meet on one partition.
- **attribute** (a Faust agent, ``take_events`` batches) reads that topic with the
  ``landing`` table (RocksDB + changelog; keys ``l|<fbclid>``) and the global ads
  catalog (agents/catalog.py), and writes candidates keyed by conversion_id.

Same delivery order as dedup (agents/dedupe.py): outputs produced and acked, then the
table's changelog, then its local writes, then Faust acks the batch; and the same input
gate (agents/progress.py: progress per partition in the table, ticks once a second).
At least once: after a crash a candidate may be written again, identical (same
conversion_id and fbclid). Landing entries expire 28 days after the hit, by the
partition's stream time (the latest conversion event_time seen), through the same
sweeper as dedup state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson

from agents.batchloop import BatchLoop
from agents.dedupe import (
    ROCKSDB_OPTIONS,
    TICK,
    Overlay,
    Sweeper,
    forget_on_revoke,
    send_ticks,
    set_current_event,
)
from agents.failfast import die
from agents.outputs import shared_outputs
from agents.progress import InputGate
from streams import metrics
from streams.attribution import LANDING_TTL, Attributor, readable, route_counted
from streams.settings import Settings
from streams.tally import Tally

log = logging.getLogger("convstream.attribution")
LANDING = "l|"


class Landing(MutableMapping[str, dict[str, Any]]):
    """fbclid → landing, over the overlay's ``l|<fbclid>`` keys."""

    def __init__(self, state: Overlay) -> None:
        self.state = state

    def __getitem__(self, fbclid: str) -> dict[str, Any]:
        return self.state[LANDING + fbclid]

    def __setitem__(self, fbclid: str, value: dict[str, Any]) -> None:
        self.state[LANDING + fbclid] = value

    def __delitem__(self, fbclid: str) -> None:
        del self.state[LANDING + fbclid]

    def __iter__(self) -> Iterator[str]:
        raise TypeError("the landing table is not iterable (it spans partitions)")

    def __len__(self) -> int:
        raise TypeError("the landing table has no length (it spans partitions)")


def internal_topic(settings: Settings) -> str:
    return f"{settings.app_id}-attribution-in"


def register(app: Any, topics: Any, settings: Settings, producer_holder: Any, catalog: Any) -> Any:
    table = app.Table(
        "landing",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options=dict(ROCKSDB_OPTIONS),
        help="SPEC §8 landing hits: fbclid -> first hit's URL, utm_*, ad ids (28 days)",
    )
    sweeper = Sweeper(
        table,
        LANDING_TTL,
        settings.dedup_sweep_interval,
        prefixes=frozenset({LANDING.encode()}),
        time_key="time",
        gauge=metrics.LANDING_KEYS,
    )
    attr_topic = internal_topic(settings)
    gate = InputGate(app, "attribution")
    outputs = shared_outputs(
        producer_holder, settings.topics.candidates, settings.topics.dead_letter
    )

    @app.service
    class Route(BatchLoop):
        """Consumer group ``<app_id>-attribution-route`` over conversions.enriched."""

        stage = "attribution_route"

        def __init__(self, **kw: Any) -> None:
            group = f"{settings.app_id}-attribution-route"
            super().__init__(settings, [settings.topics.conversions], group, **kw)

        async def handle(self, batch: dict[Any, list[Any]]) -> int:
            tally = Tally()
            items: list[tuple[str, bytes, bytes | None]] = []
            n = 0
            for records in batch.values():
                n += len(records)
                for r in records:
                    try:
                        rec = orjson.loads(r.value or b"null")
                    except orjson.JSONDecodeError:
                        rec = None
                    if not readable(rec):
                        # conversions.enriched is our output; a foreign record is skipped
                        tally["click_evidence", "unreadable"] += 1
                        continue
                    routed = route_counted(rec, tally)
                    items.extend((attr_topic, k.encode(), orjson.dumps(m)) for k, m in routed)
            await (await outputs()).send_all(items)
            tally.flush()
            return n

    async def attribute(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_within):
            try:
                await attribute_batch(events)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                die("attribution", exc)

    async def attribute_batch(events: Any) -> None:
        await catalog.loaded.wait()  # ads known at start-up are applied first
        t0 = time.perf_counter()
        out = await outputs()
        state = Overlay(table)
        attributor = Attributor(Landing(state), catalog.catalog.get)
        tally = Tally()
        candidates: list[tuple[str, bytes, bytes | None]] = []
        last_event: dict[int, Any] = {}
        progress = await gate.begin(state, events)
        for event in events:
            if not gate.admit(progress, event) or event.message.value == TICK:
                continue  # processed already, records before it skipped, or a tick
            set_current_event(event)
            state.event = event
            msg = orjson.loads(event.message.value)  # only our route agent writes here
            cand = attributor.handle(msg, tally)
            if cand is not None:
                key = cand["conversion_id"].encode()
                candidates.append((settings.topics.candidates, key, orjson.dumps(cand)))
            sweeper.observe(event.message.partition, msg["conversion"]["event_time"])
            last_event[event.message.partition] = event
        expired = sweeper.sweep(state, last_event, time.time())
        if expired:
            tally["landing_expired",] += expired
        gate.record(progress, state)
        await out.send_all(candidates)
        changelog, partitions = state.changelog()
        await out.send_all(changelog, partitions)
        state.write_local()
        await gate.finish(progress)
        tally.flush()
        metrics.BATCH_SECONDS.labels("attribution").observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels("attribution").observe(len(events))

    send_ticks(app, "convstream.attribution.tick", attr_topic, settings.partitions, outputs)
    forget_on_revoke(app, attr_topic, sweeper.forget)
    app.agent(topics.attribution_internal, name="convstream.attribution")(attribute)
    return table
