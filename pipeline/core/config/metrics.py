"""The ``metrics:`` section: where each process serves /metrics."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.core.config.base import Strict


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description=(
        "Every process that serves /metrics reads this; give each worker on one host its own with "
        "--metrics-port. 0 picks a free port."))] = 9100
