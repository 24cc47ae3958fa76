"""Result sinks: plugins keyed by ``type``, each a context manager with ``write(records)``.

Built-in types: ``jsonl``, ``webhook``, ``stdout``, ``redis``, ``events``, ``mqtt``; ``plugin`` loads
``module:callable`` from another package. A sink's ``write`` either takes the whole batch or raises
:class:`~pipeline.core.errors.SinkError`; the sink worker acknowledges records only after ``write``
returned, so a failing sink gets the same records again (at-least-once).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pipeline.core.config import (
    EventsSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    PluginSinkConfig,
    RedisSinkConfig,
    SinkConfig,
    StdoutSinkConfig,
    WebhookSinkConfig,
)
from pipeline.core.errors import ConfigError
from pipeline.results.sinks.base import Sink, SinkContext

__all__ = ["Sink", "SinkContext", "build_sink"]


def _plugin(cfg: PluginSinkConfig) -> Sink:
    module_name, _, attr = cfg.factory.partition(":")
    try:
        factory: Callable[..., Sink] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"sink plugin {cfg.factory!r} cannot be loaded: {exc}") from exc
    return factory(cfg, cfg.options)


def build_sink(cfg: SinkConfig, ctx: SinkContext | None = None) -> Sink:
    """Make the sink for one ``sinks[]`` entry (not yet opened)."""
    ctx = ctx or SinkContext()
    from pipeline.results.sinks.events import EventsSink
    from pipeline.results.sinks.files import JsonlSink, StdoutSink
    from pipeline.results.sinks.mqtt import MqttSink
    from pipeline.results.sinks.redis_stream import RedisStreamSink
    from pipeline.results.sinks.webhook import WebhookSink

    builders: dict[type[Any], Callable[[Any], Sink]] = {
        JsonlSinkConfig: JsonlSink,
        StdoutSinkConfig: lambda c: StdoutSink(),
        WebhookSinkConfig: WebhookSink,
        EventsSinkConfig: lambda c: EventsSink(c, ctx),
        RedisSinkConfig: lambda c: RedisStreamSink(c, ctx.default_redis_url),
        MqttSinkConfig: lambda c: MqttSink(c, ctx),
        PluginSinkConfig: _plugin,
    }
    return builders[type(cfg)](cfg)
