"""The ``health:`` section (camera health checks; see :mod:`pipeline.ingest.health`).

It is validated at the top level and under each stream (as overrides of the top-level one).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.core.config.base import Strict

_Seconds = Annotated[float, Field(gt=0, le=86_400)]


class HealthConfig(Strict):
    """Frozen, dark, blurred and moved cameras, judged by ingest on the sampled frames.

    The ``*_after_s`` defaults flag a camera within 60 s of going bad (plus one sample interval) and
    never flag the shared slideshow, whose photographs hold still for 2 s each.
    """

    enabled: bool = True
    frozen_after_s: _Seconds = Field(default=30.0, description="Unchanged picture this long: frozen.")
    dark_after_s: _Seconds = Field(default=30.0, description="Nearly black or uniform this long: dark.")
    blurred_after_s: _Seconds = Field(default=30.0, description="Unsharp this long: blurred.")
    moved_after_s: _Seconds = Field(default=30.0, description="Away from the reference view this long: moved.")
    clear_after_s: _Seconds = Field(default=3.0, description="Good again this long: the condition clears.")
    frozen_change: Annotated[float, Field(ge=0, le=255, description=(
        "Mean absolute change between samples, in grey levels, under which the picture counts as "
        "unchanged (encoder noise on a still picture is about 0.1-0.3)."))] = 0.5
    dark_luma: Annotated[float, Field(ge=0, le=255, description="Mean grey level under which: dark.")] = 20.0
    dark_spread: Annotated[float, Field(ge=0, le=255, description=(
        "Standard deviation of the grey levels under which the picture is uniform: dark."))] = 6.0
    blur_floor: Annotated[float, Field(ge=0, description=(
        "Sharpness (variance of the Laplacian at model size) under which any picture is blurred."))] = 15.0
    blur_ratio: Annotated[float, Field(gt=0, lt=1, description=(
        "Blurred also under this fraction of the camera's own sharpness while it was healthy."))] = 0.25
    moved_correlation: Annotated[float, Field(ge=-1, le=1, description=(
        "Correlation of the averaged view with the reference view under which the camera moved."))] = 0.5
    view_average_s: _Seconds = Field(default=5.0, description="How slowly the view is averaged for 'moved'.")
    reference_after_s: _Seconds = Field(default=30.0, description=(
        "The reference view is the averaged view once the camera was healthy this long "
        "(POST /cameras/<id>/accept-view on the ingest endpoint takes the current one)."))
    skip_frozen: bool = Field(default=False, description="Do not publish the frames of a frozen camera.")
