"""Topic declarations (SPEC §1). Inputs are consumed as raw bytes: decoding happens in
our code, so a bad value becomes a dead letter instead of being acked and lost by Faust."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class AppTopics:
    pixel_raw: Any
    server_raw: Any
    catalog: Any
    conversions: Any
    candidates: Any
    dead_letter: Any
    candidates_internal: Any  # <app_id>-dedup-in: ingest -> dedup, by pixel_id|event_name
    attribution_internal: Any  # <app_id>-attribution-in: conversions by fbclid


def declare(app: faust.App, settings: Settings) -> AppTopics:
    t = settings.topics

    def raw(name: str, **kw: Any) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
            **kw,
        )

    return AppTopics(
        pixel_raw=raw(t.pixel_raw),
        server_raw=raw(t.server_raw),
        catalog=raw(t.catalog, compacting=True),
        conversions=raw(t.conversions),
        candidates=raw(t.candidates),
        dead_letter=raw(t.dead_letter),
        candidates_internal=raw(
            f"{settings.app_id}-dedup-in", internal=True, partitions=settings.partitions
        ),
        attribution_internal=raw(
            f"{settings.app_id}-attribution-in", internal=True, partitions=settings.partitions
        ),
    )
