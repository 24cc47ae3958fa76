"""The health event on the results stream: its fields, and how a reader tells it from a result record."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.core.errors import ResultFormatError
from pipeline.results.health_event import HEALTH_KIND, HealthEvent, is_health_event


def test_a_health_event_round_trips_and_is_told_apart_from_a_result() -> None:
    e = HealthEvent("cam", "moved", True, 1732600000.1234, {"change": 3.0, "view_correlation": math.nan})
    fields = e.to_fields()
    assert fields["kind"] == HEALTH_KIND and is_health_event(fields)
    assert is_health_event({k.encode(): v.encode() for k, v in fields.items()})  # as redis-py returns it
    assert not is_health_event({"v": "1", "stream": "cam", "json": "{}"})  # a result record has no kind
    doc = json.loads(fields["json"])
    assert doc["event"] == "health_changed" and doc["stats"]["view_correlation"] is None  # JSON has no NaN
    back = HealthEvent.from_fields(fields)
    assert (back.stream, back.condition, back.active, back.at) == ("cam", "moved", True, 1732600000.123)
    assert back.stats["change"] == 3.0 and math.isnan(back.stats["view_correlation"])


@pytest.mark.parametrize("raw", ["not json", '{"stream": "cam"}', '{"stream": "c", "condition": "x", "active": 1, '
                                 '"at": "soon"}'])
def test_a_malformed_health_event_is_a_result_format_error(raw: str) -> None:
    with pytest.raises(ResultFormatError, match="malformed health event"):
        HealthEvent.from_fields({"kind": HEALTH_KIND, "json": raw})
