"""Vigil's one HTTP stack: FastAPI apps served by uvicorn in a thread of the process that owns them.

:mod:`~pipeline.web.server` runs an app (the console, the ingest worker's ``/metrics``, ``/healthz``,
``/readyz`` and camera actions); :mod:`~pipeline.web.auth` is the bearer-token check every app uses.
Errors are FastAPI's: ``HTTPException(status, detail)`` -> a JSON body ``{"detail": ...}``.
"""
