"""The sink worker's HTTP app (FastAPI, served by :mod:`pipeline.web.server` like the console and ingest's).

* ``GET /metrics``: Prometheus text: the sinks' metrics, and the pipeline accounting read from Redis;
* ``GET /healthz``: ``ok`` while the process runs;
* ``GET /readyz``: the sink service's status (:meth:`pipeline.ops.sink_service.SinkService.status`), 200
  when ready, 503 when not.

The three routes are :mod:`pipeline.ops.probes`', as ingest's app has them. Errors follow the console's
convention: ``{"detail": "..."}`` with the status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from pipeline.ops.probes import add_probes


def build_sink_app(registry: CollectorRegistry, status: Callable[[], dict[str, Any]]) -> FastAPI:
    app = FastAPI(title="Vigil sink worker", version="1", description="Metrics and health.")
    add_probes(app, registry, status, ready_when="every sink runs and every Redis instance answers")
    return app
