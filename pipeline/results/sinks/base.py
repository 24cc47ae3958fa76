"""The sink interface."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

from pipeline.results.health_event import HealthEvent
from pipeline.results.record import ResultRecord


@runtime_checkable
class Sink(Protocol):
    """Where result records go. Open with ``with``; ``write`` takes a batch or raises SinkError."""

    def __enter__(self) -> Sink: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def write(self, records: list[ResultRecord]) -> None: ...


@runtime_checkable
class HealthEventSink(Protocol):
    """A sink that also hears of cameras' health transitions (the events sink); other sinks skip them."""

    def write_health(self, events: list[HealthEvent]) -> None: ...
