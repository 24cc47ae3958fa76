"""The web console and REST API: every camera, its picture and what the model says (``console:`` section).

:mod:`~pipeline.console.data` reads Redis only (so ``vigil console`` on any machine shows what
``vigil run`` shows), :mod:`~pipeline.console.api` is the FastAPI application, and
:mod:`~pipeline.console.server` serves it with uvicorn in a thread.
"""
