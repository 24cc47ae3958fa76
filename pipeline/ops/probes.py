"""The routes every worker's HTTP app has (``vigil ingest``'s, ``vigil sink``'s), written once.

* ``GET /metrics``: Prometheus text (every metric of the process's registry);
* ``GET /healthz``: ``ok`` while the process runs;
* ``GET /readyz``: the worker's status document (JSON), 200 when its ``ready`` is true, 503 when not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry

from pipeline.ops.metrics import CONTENT_TYPE_LATEST, render


def add_probes(app: FastAPI, registry: CollectorRegistry, status: Callable[[], dict[str, Any]], *,
               ready_when: str) -> None:
    """Add ``/metrics``, ``/healthz`` and ``/readyz`` to ``app``; ``ready_when`` words /readyz's summary."""

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse, summary="The process is alive")
    def healthz() -> str:
        return "ok\n"

    @app.get("/readyz", response_class=Response, summary=f"Ready (200) when {ready_when}; else 503")
    def readyz() -> Response:
        doc = status()
        return Response(json.dumps(doc, indent=1), status_code=200 if doc["ready"] else 503,
                        media_type="application/json")
