"""Option objects for tests, derived from the config's defaults like the product's (with overrides)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.bus.reader import ConsumerOptions, FrameConsumer
from pipeline.core.config import InferenceConfig, RedisConfig, VigilConfig
from pipeline.inference.loop import LoopOptions
from pipeline.results.writer import ResultWriter


def consumer_options(urls: list[str], name: str, streams: list[str], **overrides: Any) -> ConsumerOptions:
    cfg = VigilConfig(redis=RedisConfig(urls=urls))
    return replace(ConsumerOptions.from_config(cfg, name), stream_ids=streams, **overrides)


def loop_options(**overrides: Any) -> LoopOptions:
    return replace(LoopOptions.from_config(InferenceConfig(), lanes=1, replica="local"), **overrides)


def writer_for(consumer: FrameConsumer) -> ResultWriter:
    """A result writer through an open consumer's clients, as a replica makes it."""
    return ResultWriter(consumer.clients, RedisConfig().results_maxlen)
