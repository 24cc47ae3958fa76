"""The sink interface, and what a sink is told besides its own config entry (:class:`SinkContext`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

from pipeline.core.config import ClassifierConfig
from pipeline.results.camera_event import CameraEvent
from pipeline.results.classifier_states import NoStateStore, StateStore
from pipeline.results.record import ResultRecord


@runtime_checkable
class Sink(Protocol):
    """Where result records go. Open with ``with``; ``write`` takes a batch or raises SinkError."""

    def __enter__(self) -> Sink: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def write(self, records: list[ResultRecord]) -> None: ...


@runtime_checkable
class CameraEventSink(Protocol):
    """A sink that also hears of cameras' health transitions (the events sink); other sinks skip them."""

    def write_camera_events(self, events: list[CameraEvent]) -> None: ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need besides its own config entry."""

    name: str = "sink"  # sink_name(): its consumer group, its MQTT client id
    default_redis_url: str | None = None  # the first bus instance (the redis sink's default)
    stream_ids: tuple[str, ...] = ()  # the configured cameras (MQTT discovery announces each)
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # camera -> its zones (MQTT discovery)
    classifiers: tuple[ClassifierConfig, ...] = ()  # the `classifiers:` (state ones are tracked by events logic)
    state_store: StateStore = field(default_factory=NoStateStore)  # where the classifier states are kept
