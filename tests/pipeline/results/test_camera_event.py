"""Camera events on the results stream: their fields, and how a reader tells them from a result record."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.core.errors import ResultFormatError
from pipeline.results.camera_event import (
    HEALTH_KIND,
    STATE_KIND,
    HealthEvent,
    StateEvent,
    camera_event_from_fields,
    is_camera_event,
)


def test_a_health_event_round_trips_and_is_told_apart_from_a_result() -> None:
    e = HealthEvent("cam", "moved", True, 1732600000.1234, {"change": 3.0, "view_correlation": math.nan})
    fields = e.to_fields()
    assert fields["kind"] == HEALTH_KIND and is_camera_event(fields)
    assert is_camera_event({k.encode(): v.encode() for k, v in fields.items()})  # as redis-py returns it
    assert not is_camera_event({"v": "1", "stream": "cam", "json": "{}"})  # a result record has no kind
    doc = json.loads(fields["json"])
    assert doc["event"] == "health_changed" and doc["stats"]["view_correlation"] is None  # JSON has no NaN
    back = HealthEvent.from_fields(fields)
    assert (back.stream, back.condition, back.active, back.at) == ("cam", "moved", True, 1732600000.123)
    assert back.stats["change"] == 3.0 and math.isnan(back.stats["view_correlation"])


@pytest.mark.parametrize("raw", ["not json", '{"stream": "cam"}', '{"stream": "c", "condition": "x", "active": 1, '
                                 '"at": "soon"}'])
def test_a_malformed_health_event_is_a_result_format_error(raw: str) -> None:
    with pytest.raises(ResultFormatError, match=r"malformed (camera|health) event"):
        HealthEvent.from_fields({"kind": HEALTH_KIND, "json": raw})


def test_a_state_event_round_trips() -> None:
    e = StateEvent("cam", "backing_off", "open failed: connection refused by 192.0.2.10:554", 1732600000.5)
    fields = e.to_fields()
    assert fields["kind"] == STATE_KIND and is_camera_event(fields)
    assert camera_event_from_fields({k.encode(): v.encode() for k, v in fields.items()}) == e
    assert json.loads(fields["json"])["event"] == "state_changed"
    assert isinstance(camera_event_from_fields(HealthEvent("cam", "dark", True, 1.0).to_fields()), HealthEvent)
    with pytest.raises(ResultFormatError, match="malformed state event"):
        StateEvent.from_fields({"kind": STATE_KIND, "json": '{"stream": "cam"}'})
