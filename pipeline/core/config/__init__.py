"""Vigil's one typed configuration: the only reader of YAML files and environment variables.

The package's API is what this module exports; Vigil imports the config from here. Inside it:

- :mod:`~pipeline.core.config.base`: what every section shares (strictness, retry delays, the id pattern);
- one module per section: :mod:`~pipeline.core.config.streams`, :mod:`~pipeline.core.config.redis`,
  :mod:`~pipeline.core.config.ingest`, :mod:`~pipeline.core.config.inference`,
  :mod:`~pipeline.core.config.ray`, :mod:`~pipeline.core.config.sinks`,
  :mod:`~pipeline.core.config.metrics`, :mod:`~pipeline.core.config.console`,
  :mod:`~pipeline.core.config.health`, :mod:`~pipeline.core.config.zones` (a camera's zones),
  :mod:`~pipeline.core.config.classifiers`; :mod:`~pipeline.core.config.schema` puts them together
  (:class:`VigilConfig`, the whole file);
- :mod:`~pipeline.core.config.env`: the environment (``$VIGIL_CACHE_DIR``, ``${VAR}`` substitution, ...);
- :mod:`~pipeline.core.config.paths`: relative paths in a file are relative to its folder;
- :mod:`~pipeline.core.config.loader`: reading YAML, validating it, and every problem with its line.
"""

from pipeline.core.config.base import ID_PATTERN, BackoffOptions, Strict
from pipeline.core.config.classifiers import UNKNOWN_STATE, ClassifierConfig, classifier_problems
from pipeline.core.config.console import ConsoleConfig
from pipeline.core.config.env import (
    cache_dir,
    default_engine_cache,
    log_level,
    ray_address,
    serve_config_path,
    substitute_env,
)
from pipeline.core.config.health import HealthConfig
from pipeline.core.config.inference import GpuOptions, InferenceConfig
from pipeline.core.config.ingest import IngestConfig
from pipeline.core.config.loader import format_loc, load_config, validate_config
from pipeline.core.config.metrics import MetricsConfig
from pipeline.core.config.paths import anchor_paths, is_local_file, local_path
from pipeline.core.config.ray import RayConfig
from pipeline.core.config.redis import RedisConfig
from pipeline.core.config.schema import VigilConfig
from pipeline.core.config.sinks import (
    SINK_TYPES,
    EventOptions,
    EventsSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    MqttTlsConfig,
    PluginSinkConfig,
    RedisSinkConfig,
    SinkConfig,
    StdoutSinkConfig,
    WebhookSinkConfig,
    sink_name,
)
from pipeline.core.config.streams import SOURCE_SCHEMES, ResizePolicy, StreamConfig
from pipeline.core.config.zones import FULL_ZONE, MAX_ZONES, MIN_ZONE_PIXELS, ZoneConfig

__all__ = [
    "FULL_ZONE",
    "ID_PATTERN",
    "MAX_ZONES",
    "MIN_ZONE_PIXELS",
    "SINK_TYPES",
    "SOURCE_SCHEMES",
    "UNKNOWN_STATE",
    "BackoffOptions",
    "ClassifierConfig",
    "ConsoleConfig",
    "EventOptions",
    "EventsSinkConfig",
    "GpuOptions",
    "HealthConfig",
    "InferenceConfig",
    "IngestConfig",
    "JsonlSinkConfig",
    "MetricsConfig",
    "MqttSinkConfig",
    "MqttTlsConfig",
    "PluginSinkConfig",
    "RayConfig",
    "RedisConfig",
    "RedisSinkConfig",
    "ResizePolicy",
    "SinkConfig",
    "StdoutSinkConfig",
    "StreamConfig",
    "Strict",
    "VigilConfig",
    "WebhookSinkConfig",
    "ZoneConfig",
    "anchor_paths",
    "cache_dir",
    "classifier_problems",
    "default_engine_cache",
    "format_loc",
    "is_local_file",
    "load_config",
    "local_path",
    "log_level",
    "ray_address",
    "serve_config_path",
    "sink_name",
    "substitute_env",
    "validate_config",
]
