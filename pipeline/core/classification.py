"""The one classification type, from the model runtime to every sink.

:class:`Classifications` is what the runtime produces for a batch: arrays, not per-frame objects,
so the hot path stays vectorised. :meth:`Classifications.frame` gives one frame's
:class:`FrameClassification` (object top-k and scene as :class:`Label`), which a result record
carries to every sink; :meth:`FrameClassification.from_dict` validates it once, where a record is
read back from Redis, so no sink ever indexes a raw dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.core.class_names import ClassRef, normalize


@dataclass(frozen=True)
class Label:
    index: int
    name: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.name, "score": round(self.score, 6)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Label:
        """``{"index": 3, "label": "tabby", "score": 0.8}``; raises KeyError/TypeError/ValueError if not."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a label must be an object, not {type(d).__name__}")
        return cls(int(d["index"]), str(d["label"]), float(d["score"]))


@dataclass(frozen=True)
class FrameClassification:
    """One frame's (one crop's) object top-k and scene, and the answer of each classifier that runs on it
    (``classifiers:``, by id)."""

    top_k: list[Label]
    scene: Label | None
    classifiers: dict[str, Label] = field(default_factory=dict)

    @property
    def top1(self) -> Label | None:
        """The best object label (None when the model gave none)."""
        return self.top_k[0] if self.top_k else None

    def score_of(self, ref: ClassRef | str) -> float:
        """The score of the class ``ref`` names if it is in the top-k; else of the scene if ``ref`` names the
        frame's scene category (``people``); else 0. Names match as :mod:`pipeline.core.class_names` says."""
        ref = ClassRef.parse(ref) if isinstance(ref, str) else ref
        # A label called exactly ``ref`` first (``missile`` before ``projectile, missile``), then any synonym.
        exact = (lab.score for lab in self.top_k if ref.index is None and ref.key == normalize(lab.name))
        score = next(exact, 0.0) or next((lab.score for lab in self.top_k if ref.matches(lab.index, lab.name)), 0.0)
        if not score and self.scene is not None and ref.index is None and ref.key == normalize(self.scene.name):
            return self.scene.score
        return score

    def as_dict(self) -> dict[str, Any]:
        return {
            "top_k": [lab.as_dict() for lab in self.top_k],
            "scene": self.scene.as_dict() if self.scene else None,
            "classifiers": {cid: lab.as_dict() for cid, lab in self.classifiers.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrameClassification:
        """The inverse of :meth:`as_dict`; raises KeyError/TypeError/ValueError on a malformed document."""
        top = d["top_k"]
        if not isinstance(top, list):
            raise TypeError(f"top_k must be a list, not {type(top).__name__}")
        scene = d.get("scene")
        answers = d.get("classifiers") or {}
        if not isinstance(answers, Mapping):
            raise TypeError(f"classifiers must be an object, not {type(answers).__name__}")
        return cls([Label.from_dict(t) for t in top], Label.from_dict(scene) if scene is not None else None,
                   {str(cid): Label.from_dict(lab) for cid, lab in answers.items()})


@dataclass(frozen=True)
class ClassifierAnswers:
    """One classifier's answers for N crops: the best class and its score per crop, ``-1`` where it did not run
    (a crop of a camera or zone it is not configured for)."""

    class_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    class_names: tuple[str, ...]
    seconds: float = 0.0  # how long its answers took: its own model's run, or the merged run it was grafted onto

    @property
    def ran(self) -> bool:
        """Whether it answered for any crop of the batch."""
        return bool((self.class_ids >= 0).any())

    def at(self, i: int) -> Label | None:
        index = int(self.class_ids[i])
        return Label(index, self.class_names[index], float(self.scores[i])) if index >= 0 else None


@dataclass(frozen=True)
class Classifications:
    """Classifier output for N frames.

    ``class_ids``/``scores``: [N, k] object classes, best first. ``scene_ids``/``scene_scores``: [N]
    (empty arrays when the model has no scene map). Names are looked up in ``class_names`` and
    ``scene_names``. ``classifiers``: each configured classifier's answers (:class:`ClassifierAnswers`).
    """

    class_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    scene_ids: npt.NDArray[np.int64]
    scene_scores: npt.NDArray[np.float32]
    class_names: tuple[str, ...]
    scene_names: tuple[str, ...]
    classifiers: Mapping[str, ClassifierAnswers] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def frame(self, i: int) -> FrameClassification:
        top = [Label(int(c), self.class_names[int(c)], float(s))
               for c, s in zip(self.class_ids[i], self.scores[i], strict=True)]
        scene = None
        if self.scene_ids.size:
            scene_id = int(self.scene_ids[i])
            scene = Label(scene_id, self.scene_names[scene_id], float(self.scene_scores[i]))
        answers = {cid: lab for cid, a in self.classifiers.items() if (lab := a.at(i)) is not None}
        return FrameClassification(top, scene, answers)

    def frames(self) -> list[FrameClassification]:
        return [self.frame(i) for i in range(len(self))]
