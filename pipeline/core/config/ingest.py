"""The ``ingest:`` section: timeouts and backoff of the ingest worker."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.core.config.base import BackoffOptions


class IngestConfig(BackoffOptions):
    """Timeouts and backoff of the ingest worker."""

    open_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    stall_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_failures: Annotated[int, Field(ge=0, description=(
        "A camera that fails with the same permanent error (a file that is not a video, credentials "
        "rejected, no stream at that path) this many times in a row goes to `failed`; transient errors "
        "(network, timeouts) are retried for ever. 0 = never give up."))] = 3
