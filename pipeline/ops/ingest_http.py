"""The ingest worker's HTTP app (FastAPI, served by :mod:`pipeline.web.server` like the console).

* ``GET /metrics``, ``GET /healthz``, ``GET /readyz`` (:mod:`pipeline.ops.probes`, as ``vigil sink``'s
  app has them): ``/readyz`` is the worker's status (:meth:`pipeline.ingest.worker.IngestWorker.status`),
  200 when ready, 503 when not;
* ``POST /cameras/<id>/accept-view``: make the camera's current view its health reference (404: this
  worker runs no such camera). It takes no token, as before; a route that needs one adds
  :func:`pipeline.web.auth.bearer` as the console does.

Errors follow the console's convention: ``{"detail": "..."}`` with the status.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import FastAPI, HTTPException, Path
from prometheus_client import CollectorRegistry

from pipeline.ops.probes import add_probes

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
    add_probes(app, worker.registry, worker.status,
               ready_when="every Redis instance is up with room and a camera is live")

    @app.post("/cameras/{sid}/accept-view", summary="Make the camera's current view its health reference")
    def accept_view(stream_id: StreamIdInPath) -> dict[str, str]:
        if not worker.accept_view(stream_id):
            raise HTTPException(404, f"no camera {stream_id!r} here")
        return {"accepted_view": stream_id}

    return app
