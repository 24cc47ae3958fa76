"""A state classifier's state per camera and zone: confirm, min_score, unknown, late results, a restart."""

from __future__ import annotations

import math
from typing import Any

from pipeline.core.classification import FrameClassification, Label
from pipeline.core.config import ClassifierConfig
from pipeline.core.model_identity import ModelIdentity
from pipeline.results.classifier_states import StateTracker, ZoneState
from pipeline.results.record import ResultRecord

GATE = ClassifierConfig(id="gate", model="gate.onnx", kind="state", classes=["closed", "open"], min_score=0.8,
                        confirm=3)
LIGHT = ClassifierConfig(id="light", model="light.onnx", kind="label", classes=["dark", "bright"])


def result(ts: float, label: str, score: float, zone: str = "gate", stream: str = "drive") -> ResultRecord:
    answers = {"gate": Label(0 if label == "closed" else 1, label, score), "light": Label(1, "bright", 0.9)}
    return ResultRecord(stream=stream, zone=zone, seq=int(ts), frame_id=f"{int(ts * 1000)}-0", capture_ts=ts,
                        inference_ts=ts + 0.1, model=ModelIdentity("m", "1"),
                        classification=FrameClassification([], None, answers), queue_ms=0.0, inference_ms=1.0,
                        batch_size=1, replica="r")


def feed(tracker: StateTracker, seq: list[tuple[str, float]], start: float = 0.0, **kw: str) -> list[dict[str, Any]]:
    return [e for i, (label, score) in enumerate(seq) for e in tracker.feed(result(start + i, label, score, **kw))]


def test_a_state_changes_after_confirm_agreeing_results_and_never_flickers() -> None:
    t = StateTracker([GATE, LIGHT])
    events = feed(t, [("open", 0.9), ("open", 0.95), ("closed", 0.9), ("open", 0.9), ("open", 0.9), ("open", 0.99)])
    assert [(e["from"], e["to"], e["since"]) for e in events] == [(None, "open", 5.0)]  # the run broke at 2
    e = events[0]
    assert (e["event"], e["stream"], e["zone"], e["classifier"], e["frame_id"]) == \
        ("state_changed", "drive", "gate", "gate", "5000-0")
    more = feed(t, [("closed", 0.9)] * 2 + [("open", 0.9)] + [("closed", 0.85)] * 3, start=10)
    assert [(e["from"], e["to"], e["since"]) for e in more] == [("open", "closed", 15.0)]


def test_below_min_score_is_unknown_never_a_guess() -> None:
    t = StateTracker([GATE])
    feed(t, [("open", 0.9)] * 3)
    events = feed(t, [("closed", 0.5), ("open", 0.79), ("closed", 0.1)], start=10)  # each below 0.8
    assert [(e["from"], e["to"]) for e in events] == [("open", "unknown")]
    assert [(e["from"], e["to"]) for e in feed(t, [("open", 0.95)] * 3, start=20)] == [("unknown", "open")]


def test_zones_and_cameras_have_their_own_states_and_late_results_are_ignored() -> None:
    t = StateTracker([GATE])
    feed(t, [("open", 0.9)] * 3, zone="gate")
    feed(t, [("closed", 0.9)] * 3, zone="side")
    feed(t, [("closed", 0.9)] * 3, stream="yard")
    states = {k: s.state for k, s in t.current().items()}
    assert states == {("drive", "gate", "gate"): "open", ("drive", "side", "gate"): "closed",
                      ("yard", "gate", "gate"): "closed"}
    assert feed(t, [("closed", 0.9)] * 5, start=-10) == []  # captured before the newest seen: late
    assert t.current()["drive", "gate", "gate"].state == "open"


def test_states_survive_a_restart_through_what_dirty_returns() -> None:
    t = StateTracker([GATE, LIGHT])
    feed(t, [("open", 0.9)] * 3 + [("closed", 0.9)] * 2)  # open since 2.0, two of three closed seen
    saved = t.dirty()
    assert set(saved) == {"drive/gate/gate"} and t.dirty() == {}  # label classifiers are not tracked
    again = StateTracker([GATE])
    again.restore({**saved, "drive/gate/removed": ZoneState("x").to_json()})
    st = again.current()["drive", "gate", "gate"]
    assert (st.state, st.since, st.candidate, st.count) == ("open", 2.0, "closed", 2)
    assert list(again.current()) == [("drive", "gate", "gate")]  # a classifier no longer configured is dropped
    assert [(e["from"], e["to"]) for e in feed(again, [("closed", 0.9)], start=5)] == [("open", "closed")]
    assert math.isinf(ZoneState.from_json(ZoneState().to_json()).newest_capture_ts)
