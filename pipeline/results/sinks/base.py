"""The sink interface."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

from pipeline.results.camera_event import CameraEvent
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
