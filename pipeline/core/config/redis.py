"""The ``redis:`` section: where the frame bus lives (:mod:`pipeline.core.bus_layout` makes its shards)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.config.base import Strict
from pipeline.core.errors import BusError, ConfigError
from pipeline.core.redact import redact_url
from pipeline.core.redis_clients import SENTINEL_SCHEME, SentinelAddress


class RedisConfig(Strict):
    """The frame bus: one or more Redis instances; each camera is pinned to one by a hash of its id."""

    urls: list[str] = Field(default_factory=list, description=(
        "redis://, rediss://, unix:// or redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB] "
        "(a primary that Sentinels manage, followed across failovers); with mode: cluster, nodes of one Redis "
        "Cluster to start from (redis:// or rediss://). Empty: `vigil run` starts its own Redis."))
    mode: Literal["standalone", "cluster"] = Field(default="standalone", description=(
        "standalone: each URL is one instance and cameras are pinned to instances. cluster: the URLs are nodes "
        "of one Redis Cluster; cameras are pinned to cluster_shards shards, each one hash slot."))
    cluster_shards: Annotated[int, Field(ge=1, le=1024, description=(
        "With mode: cluster, how many shards (hash tags) the cameras are spread over: at least a few per "
        "cluster primary, so each carries a share. Changing it moves cameras to other shards."))] = 16
    maxlen: Annotated[int, Field(ge=10, description=(
        "Per-camera stream length: over it (and a sixteenth), the oldest frames are trimmed, those not read yet "
        "counted as evicted."))] = 500
    results_maxlen: Annotated[int, Field(ge=100, description="Results stream length (XADD MAXLEN ~).")] = 100_000
    deadletter_maxlen: Annotated[int, Field(ge=10, description="Dead-letter stream length.")] = 10_000
    frame_encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90
    socket_timeout_s: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("urls")
    @classmethod
    def _check_schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("redis://", "rediss://", "unix://", f"{SENTINEL_SCHEME}://")):
                raise ValueError(f"{redact_url(url)!r} must start with redis://, rediss:// (TLS), unix:// or "
                                 f"{SENTINEL_SCHEME}:// (a primary that Redis Sentinels manage)")
            if url.startswith(f"{SENTINEL_SCHEME}://"):
                try:
                    SentinelAddress.parse(url)
                except BusError as exc:
                    raise ValueError(str(exc)) from exc
        return urls

    @model_validator(mode="after")
    def _check_cluster(self) -> RedisConfig:
        if self.mode == "cluster":
            for i, url in enumerate(self.urls):
                if not url.startswith(("redis://", "rediss://")):
                    raise ValueError(f"urls[{i}] {redact_url(url)!r}: with mode: cluster every URL is a node of the "
                                     "cluster, redis:// or rediss:// (Sentinel and unix sockets are standalone only)")
        return self

    def bus_urls(self, component: str) -> list[str]:
        """``urls``, or a :class:`ConfigError` saying that ``component`` needs them (the one such check)."""
        if not self.urls:
            raise ConfigError(f"redis.urls is empty: {component} needs the Redis instance(s) of the frame bus; "
                              "list them under redis.urls (only `vigil run` starts a Redis of its own)",
                              ["redis.urls: is empty"])
        return list(self.urls)
