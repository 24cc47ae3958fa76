"""The lifecycle of the objects that open once: new -> open (``__enter__``) -> closed (``__exit__``).

The frame bus (:class:`pipeline.bus.publisher.FrameBus`), the frame consumer
(:class:`pipeline.bus.reader.FrameConsumer`) and the sink service (:class:`pipeline.ops.sink_service.SinkService`)
each hold one :class:`Lifecycle` and word their misuse errors with the two helpers below, so the three say
the same thing the same way. (The model runtime is not one of them: it can be opened again after closing.)
"""

from __future__ import annotations

import enum


class Lifecycle(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def not_new(what: str, state: Lifecycle, remedy: str) -> str:
    """Why ``what`` cannot open again, e.g. "the frame bus is closed; make a new FrameBus to publish again"."""
    return f"the {what} is {state.value}; {remedy}"


def not_open(what: str, state: Lifecycle) -> str:
    """Why ``what`` cannot be used, e.g. "the frame bus is new, not open; use it as a context manager"."""
    return f"the {what} is {state.value}, not open; use it as a context manager"
