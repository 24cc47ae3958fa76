"""What every config section shares: strictness, retry delays, the id pattern."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A camera or sink id: used in Redis keys, metric labels and MQTT topics.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    """Every config section: unknown keys are errors, and a validated config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffOptions(Strict):
    """Retry delays (:class:`pipeline.core.backoff.Backoff`): attempt n waits min(cap, base * 2**n), jittered."""

    backoff_base_s: Annotated[float, Field(gt=0, description="First retry delay.")] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0, description="Longest retry delay.")] = 30.0

    @model_validator(mode="after")
    def _cap_above_base(self) -> BackoffOptions:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        return self
