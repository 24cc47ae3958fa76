"""Change detection with hysteresis."""

from __future__ import annotations

from pipeline.results.sinks.events import EventDetector
from tests.pipeline.results.sinks.records import record


def kinds(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["event"], e.get("from"), e.get("to", e.get("label"))) for e in events]


def test_first_stable_label_then_changes_need_hysteresis() -> None:
    d = EventDetector(hysteresis=3, watch={})
    out = []
    seq = ["cat"] * 3 + ["dog"] * 2 + ["cat"] + ["dog"] * 3
    for i, lab in enumerate(seq):
        out += d.feed(record("cam", lab, i=i))
    assert kinds(out) == [("label_changed", None, "cat"), ("scene_changed", None, "animals"),
                          ("label_changed", "cat", "dog")]
    assert out[-1]["frame_id"] == "1008-0"  # the result that settled the change


def test_flicker_below_hysteresis_is_ignored() -> None:
    d = EventDetector(hysteresis=2, watch={})
    out = []
    for i, lab in enumerate(["cat", "cat", "dog", "cat", "dog", "cat"]):
        out += d.feed(record("cam", lab, i=i))
    assert [e["event"] for e in out] == ["label_changed", "scene_changed"]


def test_cameras_are_independent() -> None:
    d = EventDetector(hysteresis=1, watch={})
    assert kinds(d.feed(record("a", "cat")))[0] == ("label_changed", None, "cat")
    assert kinds(d.feed(record("b", "dog")))[0] == ("label_changed", None, "dog")
    assert d.feed(record("a", "cat")) == []


def test_watched_label_appears_and_clears() -> None:
    d = EventDetector(hysteresis=2, watch={"person": 0.5})
    out = []
    frames = [[("person", 0.6)], [("person", 0.7)], [("person", 0.2)], [], []]
    for i, extra in enumerate(frames):
        out += [e for e in d.feed(record("cam", "bench", i=i, extra=extra)) if e["event"].startswith("watch")]
    assert [(e["event"], e["label"]) for e in out] == [("watch_appeared", "person"), ("watch_cleared", "person")]
    assert out[0]["score"] == 0.7


def test_late_results_cannot_flip_the_label_back() -> None:
    # Two batches classified side by side: the newer one (dog) is written before the older one (cat).
    d = EventDetector(hysteresis=3, watch={})
    out = []
    for i in [*range(0, 4), *range(8, 14), *range(4, 8), *range(14, 18)]:
        out += d.feed(record("cam", "cat" if i < 8 else "dog", i=i))
    assert kinds(out) == [("label_changed", None, "cat"), ("scene_changed", None, "animals"),
                          ("label_changed", "cat", "dog")]


def test_watch_keys_match_synonyms_indices_and_scene_categories() -> None:
    """`tabby` and `TABBY_cat` match the class "tabby, tabby cat", `2` its index, `people` the frame's scene."""
    d = EventDetector(hysteresis=1, watch={"tabby": 0.5, "Tabby_Cat": 0.5, "2": 0.5, "3_tabby": 0.5, "people": 0.7})
    cat = d.feed(record("cam", "bench", i=0, extra=[("tabby, tabby cat", 0.6)], scene="people"))
    appeared = {e["label"]: e["score"] for e in cat if e["event"] == "watch_appeared"}
    # index 2 is the tabby here (records() numbers extras from 2); "3_tabby" names another index: no match.
    assert appeared == {"tabby": 0.6, "Tabby_Cat": 0.6, "2": 0.6, "people": 0.8}
    gone = d.feed(record("cam", "bench", i=1, scene="indoor"))
    assert {e["label"] for e in gone if e["event"] == "watch_cleared"} == {"tabby", "Tabby_Cat", "2", "people"}
