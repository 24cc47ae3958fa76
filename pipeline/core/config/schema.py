"""The whole configuration file: :class:`VigilConfig`, one field per section (each its own module)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from pipeline.core.config.base import Strict
from pipeline.core.config.classifiers import ClassifierConfig, classifier_problems
from pipeline.core.config.console import ConsoleConfig
from pipeline.core.config.health import HealthConfig
from pipeline.core.config.inference import InferenceConfig
from pipeline.core.config.ingest import IngestConfig
from pipeline.core.config.metrics import MetricsConfig
from pipeline.core.config.ray import RayConfig
from pipeline.core.config.redis import RedisConfig
from pipeline.core.config.sinks import SinkConfig, sink_name
from pipeline.core.config.streams import StreamConfig


class VigilConfig(Strict):
    """The whole configuration file."""

    def with_metrics_port(self, port: int | None) -> VigilConfig:
        """This config with /metrics on ``port`` (a worker's ``--metrics-port``); unchanged for None."""
        if port is None:
            return self
        return self.model_copy(update={"metrics": self.metrics.model_copy(update={"port": port})})

    streams: list[StreamConfig] = Field(default_factory=list)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    sinks: list[SinkConfig] = Field(default_factory=list)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    classifiers: list[ClassifierConfig] = Field(default_factory=list, description=(
        "The operator's own classifiers, each on some cameras' zones (pipeline/core/config/classifiers.py)."))

    @model_validator(mode="after")
    def _streams_inherit_health(self) -> VigilConfig:
        """Each stream's ``health:`` is the top-level one with the keys the stream set itself on top."""
        streams = [s.model_copy(update={"health": self.health.model_copy(
            update={k: getattr(s.health, k) for k in s.health.model_fields_set})}) for s in self.streams]
        object.__setattr__(self, "streams", streams)  # frozen: this validator completes the value
        return self

    @model_validator(mode="after")
    def _classifiers_name_what_exists(self) -> VigilConfig:
        problems = classifier_problems(self.classifiers, self.streams)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        names = [sink_name(s, i) for i, s in enumerate(sinks)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink name(s) {', '.join(dup)} used twice; give each sink a unique name")
        return sinks

    @field_validator("streams")
    @classmethod
    def _unique_ids(cls, streams: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        for s in streams:
            if s.id in seen:
                raise ValueError(f"stream id {s.id!r} is used twice; ids must be unique")
            seen.add(s.id)
        return streams
