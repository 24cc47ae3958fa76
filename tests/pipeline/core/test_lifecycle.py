"""The open-once objects word their misuse the same way."""

from __future__ import annotations

from pipeline.core.lifecycle import Lifecycle, not_new, not_open


def test_the_two_messages_name_the_object_and_its_state() -> None:
    assert not_new("frame bus", Lifecycle.CLOSED, "make a new FrameBus to publish again") == (
        "the frame bus is closed; make a new FrameBus to publish again")
    assert not_open("frame consumer", Lifecycle.NEW) == (
        "the frame consumer is new, not open; use it as a context manager")
