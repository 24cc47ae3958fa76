"""The ``streams:`` section: the cameras (or files) that ingest reads, each with its own health checks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.config.base import ID_PATTERN, Strict
from pipeline.core.config.health import HealthConfig
from pipeline.core.config.zones import FULL_ZONE, ResizePolicy, ZoneConfig, zones_problem
from pipeline.core.redact import redact_url

__all__ = ["SOURCE_SCHEMES", "ResizePolicy", "StreamConfig"]
#: URL schemes a camera may use (OpenCV's FFmpeg backend opens them); a URL without one is a local file.
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")


class StreamConfig(Strict):
    """One camera (or file) that ingest reads."""

    id: Annotated[str, Field(pattern=ID_PATTERN, description="Unique id; used in Redis keys and metrics.")]
    url: Annotated[str, Field(min_length=1, description="rtsp://, rtsps://, http(s)://, file path, /dev/videoN")]
    fps: Annotated[float, Field(gt=0, le=120, description="Frames per second sampled for inference.")] = 5.0
    resize: ResizePolicy = Field(default="squash", description="How the whole picture is fitted to the model's input.")
    full_frame: bool = Field(default=True, description=(
        f"Classify the whole picture too, as the zone {FULL_ZONE!r}. False: only the zones."))
    zones: list[ZoneConfig] = Field(default_factory=list, description=(
        "Regions of the picture classified on their own: each sampled frame is decoded once and cut into "
        "one model-sized crop per zone."))
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(default=False, description="Loop a local file (paced at its native fps).")
    keyframes_only: bool = Field(default=False, description="Decode only keyframes (saves CPU at low fps).")
    health: HealthConfig = Field(default_factory=HealthConfig, description=(
        "This camera's health checks: the top-level health: section, with the keys set here overriding it."))

    @field_validator("url")
    @classmethod
    def _supported_source(cls, url: str) -> str:
        scheme, sep, _ = url.partition("://")
        if sep and scheme.lower() not in SOURCE_SCHEMES:
            raise ValueError(f"{redact_url(url)!r}: unsupported scheme {scheme + '://'!r}; use one of "
                             f"{', '.join(s + '://' for s in SOURCE_SCHEMES)}, a local file path or /dev/videoN")
        return url

    @model_validator(mode="after")
    def _zones(self) -> StreamConfig:
        problem = zones_problem(self.zones, self.full_frame)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def zone_ids(self) -> tuple[str, ...]:
        """The zones each frame of this camera is classified in, in the order its crops travel."""
        return ((FULL_ZONE,) if self.full_frame else ()) + tuple(z.id for z in self.zones)

    def redacted_url(self) -> str:
        return redact_url(self.url)

