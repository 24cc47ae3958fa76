"""The ingest worker's HTTP app (FastAPI, served by :mod:`pipeline.web.server` like the console).

* ``GET /metrics``: Prometheus text (every metric of the process's registry);
* ``GET /healthz``: ``ok`` while the process runs;
* ``GET /readyz``: the worker's status (:meth:`pipeline.ingest.worker.IngestWorker.status`), 200 when
  ready, 503 when not;
* ``POST /cameras/<id>/accept-view``: make the camera's current view its health reference (404: this
  worker runs no such camera). It takes no token, as before; a route that needs one adds
  :func:`pipeline.web.auth.bearer` as the console does.

Errors follow the console's convention: ``{"detail": "..."}`` with the status.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, HTTPException, Path
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry

from pipeline.ops.metrics import CONTENT_TYPE_LATEST, render

# A camera's id in a route: ``{sid}`` is the HTTP API's name for it (OpenAPI, error bodies), kept as it was.
StreamIdInPath = Annotated[str, Path(alias="sid")]


class IngestEndpoints(Protocol):
    """What the app serves (an :class:`~pipeline.ops.ingest_service.IngestService`)."""

    @property
    def registry(self) -> CollectorRegistry: ...

    def status(self) -> dict[str, Any]: ...

    def accept_view(self, stream_id: str) -> bool: ...


def build_ingest_app(worker: IngestEndpoints) -> FastAPI:
    app = FastAPI(title="Vigil ingest worker", version="1", description="Metrics, health and camera actions.")

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(render(worker.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse, summary="The process is alive")
    def healthz() -> str:
        return "ok\n"

    @app.get("/readyz", response_class=Response,
             summary="Ready (200) when every Redis instance is up with room and a camera is live; else 503")
    def readyz() -> Response:
        doc = worker.status()
        return Response(json.dumps(doc, indent=1), status_code=200 if doc["ready"] else 503,
                        media_type="application/json")

    @app.post("/cameras/{sid}/accept-view", summary="Make the camera's current view its health reference")
    def accept_view(stream_id: StreamIdInPath) -> dict[str, str]:
        if not worker.accept_view(stream_id):
            raise HTTPException(404, f"no camera {stream_id!r} here")
        return {"accepted_view": stream_id}

    return app
