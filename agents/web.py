"""Web views on the worker's port: /metrics (Prometheus text), /healthz, /readyz."""

from __future__ import annotations

from typing import Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.catalog import CatalogState
from agents.ingest import IngestState
from streams import metrics


def register(app: Any, ingest: IngestState, catalog: CatalogState) -> None:
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
            )
            return self.json({"ready": ready}, status=200 if ready else 503)
