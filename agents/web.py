"""Web views on the worker's port: /metrics (Prometheus text), /healthz, /readyz."""

from __future__ import annotations

from typing import Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.catalog import CatalogState
from agents.ingest import IngestState
from streams import metrics


def stages_assigned(app: Any, stage_topics: frozenset[str]) -> bool:
    """Whether this worker holds at least one partition of every stateful stage's input
    topic (a group joined before the broker knew a topic leaves it unassigned). A worker
    beyond the partition count holds none and is not ready: it waits as a spare."""
    held = {tp.topic for tp in app.consumer.assignment()}
    return stage_topics <= held


def register(
    app: Any, ingest: IngestState, catalog: CatalogState, stage_topics: frozenset[str]
) -> None:
    @app.page("/metrics")
    class Metrics(web.View):  # type: ignore[misc]
        async def get(self, request: web.Request) -> web.Response:
            body = generate_latest(metrics.REGISTRY)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    class Healthz(web.View):  # type: ignore[misc]
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Readyz(web.View):  # type: ignore[misc]
        async def get(self, request: web.Request) -> web.Response:
            recovered = app.tables.recovery.completed.is_set() if app.tables else True
            ready = bool(
                app.started
                and not app.rebalancing
                and recovered
                and ingest.joined
                and catalog.loaded.is_set()
                and stages_assigned(app, stage_topics)
            )
            return self.json({"ready": ready}, status=200 if ready else 503)
