"""``classifiers:``: the operator's own questions, each answered on some cameras' zones.

A classifier is an ONNX model: a full classifier of its own, or (what ``vigil models finetune`` writes) the
serving model's backbone with a new head or retrained last blocks, which the runtime runs on the serving
model's features, so the backbone runs once per crop whatever the number of such classifiers. ``kind``:

* ``label``: every result carries the classifier's top label and its score;
* ``state``: the sinks keep one state per camera and zone, changed only after ``confirm`` consecutive
  results agree at or above ``min_score``, and ``unknown`` while results stay below it.

The ImageNet model (``inference.model``) and its scene map keep answering on every crop, as ``top_k`` and
``scene``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.core.config.base import ID_PATTERN, Strict
from pipeline.core.config.streams import StreamConfig

#: The state of a ``state`` classifier whose results stay below ``min_score``: never a guess.
UNKNOWN_STATE = "unknown"
#: What a zone's own MQTT topics are called (``<camera>/<zone>/label``...): no classifier may take those names.
RESERVED_IDS = ("label", "scene", "watch", "state", "events", "result")


class ClassifierConfig(Strict):
    """One classifier: which model, which classes, where it runs, and what kind of answer it gives."""

    id: Annotated[str, Field(pattern=ID_PATTERN, description="Unique; in results, events, metrics and MQTT topics.")]
    model: Annotated[str, Field(min_length=1, description=(
        "ONNX classifier: a head or tail from `vigil models finetune` on the serving model, or a model of its own."))]
    kind: Literal["label", "state"] = "label"
    classes: Annotated[list[str], Field(min_length=2, description=(
        "Its classes, in the model's order: checked against the labels the model carries."))]
    cameras: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list, description=(
        "The cameras it runs on; empty: every camera."))
    zones: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list, description=(
        "The zones it runs on (`full` is the whole picture); empty: every zone of its cameras."))
    min_score: Annotated[float, Field(ge=0, le=1, description=(
        "state: a result counts only at or above this score; below it the state becomes unknown."))] = 0.6
    confirm: Annotated[int, Field(ge=1, le=1000, description=(
        "state: consecutive results that must agree before the state changes."))] = 3

    @model_validator(mode="after")
    def _known_classes(self) -> ClassifierConfig:
        if self.id in RESERVED_IDS:
            raise ValueError(f"classifier id {self.id!r} is a topic of every zone's own (MQTT "
                             f"<camera>/<zone>/{self.id}); name it otherwise (not {', '.join(RESERVED_IDS)})")
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if dupes:
            raise ValueError(f"classifier {self.id!r}: classes repeated: {', '.join(dupes)}")
        if self.kind == "state" and UNKNOWN_STATE in self.classes:
            raise ValueError(f"classifier {self.id!r}: {UNKNOWN_STATE!r} is the state when no class is sure; "
                             "name the class otherwise")
        return self

    def runs_on(self, stream_id: str, zone: str) -> bool:
        """Whether this classifier answers for ``zone`` of camera ``stream_id``."""
        return (not self.cameras or stream_id in self.cameras) and (not self.zones or zone in self.zones)


def classifier_problems(classifiers: list[ClassifierConfig], streams: list[StreamConfig]) -> list[str]:
    """What a classifier list names that the cameras do not have, each with the key and how to fix it."""
    problems: list[str] = []
    ids = [c.id for c in classifiers]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"classifier id {dup!r} is used twice; ids must be unique")
    by_id = {s.id: s for s in streams}
    for i, c in enumerate(classifiers):
        for cam in c.cameras:
            if cam not in by_id:
                problems.append(f"classifiers[{i}].cameras: no camera {cam!r} in streams "
                                f"(cameras: {', '.join(sorted(by_id)) or 'none'})")
        cams = [by_id[cam] for cam in c.cameras if cam in by_id] if c.cameras else list(by_id.values())
        for zone in c.zones:
            missing = [s.id for s in cams if zone not in s.zone_ids]
            if c.cameras and missing:
                problems.append(f"classifiers[{i}].zones: camera(s) {', '.join(missing)} have no zone {zone!r}; "
                                "add it to their streams[].zones or list only the cameras that have it")
            elif not c.cameras and len(missing) == len(cams):
                problems.append(f"classifiers[{i}].zones: no camera has a zone {zone!r}; add it to a camera's "
                                "streams[].zones")
    return problems
