"""Attribution (SPEC §8): conversions repartitioned by fbclid → landing table + catalog
→ ``conversions.attribution_candidates``.

- **route**: the dedup stage (agents/dedupe.py), as it emits a conversion, writes one
  small message per distinct fbclid of it (``streams.attribution.route``) to
  ``<app_id>-attribution-in``, on the partition of the fbclid, so a landing hit and
  every lookup of it meet on one partition; the messages of one batch for one partition
  travel as one group record (streams/groups.py). Written with the conversions, before
  dedup's changelog: a crash repeats them, identical, never loses them.
- **attribute** (a stateful stage, agents/stage.py) reads that topic with the
  ``landing`` table (RocksDB + changelog; keys ``l|<fbclid>``) and the global ads
  catalog (agents/catalog.py), and writes candidates keyed by conversion_id.

Same delivery mechanism as dedup (agents/stage.py): outputs produced and acked, then
the table's changelog, then its local writes, then Faust acks the batch; the same input
gate (progress per partition in the table, ticks once a second).
At least once: after a crash a candidate may be written again, identical (same
conversion_id and fbclid). Landing entries expire 28 days after the hit, by the
partition's stream time (the latest conversion event_time seen), through the same
sweeper as dedup state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson

from agents.outputs import shared_outputs
from agents.progress import group_committed
from agents.stage import (
    ROCKSDB_OPTIONS,
    STAGE_BATCH_RECORDS,
    Batch,
    Overlay,
    StatefulStage,
    Sweeper,
)
from streams import metrics
from streams.attribution import LANDING_TTL, Attributor
from streams.settings import Settings

log = logging.getLogger("convstream.attribution")
LANDING = "l|"


class Landing(MutableMapping[str, dict[str, Any]]):
    """fbclid → landing, over the overlay's ``l|<fbclid>`` keys."""

    def __init__(self, state: Overlay) -> None:
        self.state = state

    def get(self, fbclid: str, default: Any = None) -> Any:
        return self.state.get(LANDING + fbclid, default)

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
    outputs = shared_outputs(
        producer_holder, settings.topics.candidates, settings.topics.dead_letter
    )

    StatefulStage(
        app,
        name="attribution",
        table=table,
        topic=topics.attribution_internal,
        partitions=settings.partitions,
        outputs=outputs,
        sweeper=sweeper,
        begin=lambda batch: AttributeBody(batch, catalog, settings.topics.candidates),
        batch_records=STAGE_BATCH_RECORDS,
        batch_within=settings.batch_within,
        expired_counter="landing_expired",
        ready=catalog.loaded.wait,  # ads known at start-up are applied first
        committed=group_committed(settings, app.conf.id),
    )
    return table


class AttributeBody:
    """One batch of the attribute stage (a ``Body`` of agents/stage.py)."""

    def __init__(self, batch: Batch, catalog: Any, topic: str) -> None:
        self.batch = batch
        self.topic = topic
        self.attributor = Attributor(Landing(batch.state), catalog.catalog.get)

    def tick(self, partition: int, wall: float) -> None:
        pass  # nothing waits on time here

    def event(
        self, partition: int, msg: dict[str, Any], offset: int, index: int, raw: bytes | None
    ) -> float:
        cand = self.attributor.handle(msg, self.batch.tally)
        if cand is not None:
            self.batch.emit(self.topic, cand["conversion_id"].encode(), orjson.dumps(cand))
        t: float = msg["conversion"]["event_time"]
        return t

    def end(self) -> None:
        pass
