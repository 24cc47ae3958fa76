"""The one data type that inference produces: a batch of classifications.

Arrays, not per-frame objects, so the hot path stays vectorised; :meth:`Classifications.frame`
gives one frame's view for sinks and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Label:
    index: int
    name: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.name, "score": round(self.score, 6)}


@dataclass(frozen=True)
class FrameClassification:
    """One frame's object top-k and scene."""

    top_k: list[Label]
    scene: Label | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "top_k": [lab.as_dict() for lab in self.top_k],
            "scene": self.scene.as_dict() if self.scene else None,
        }


@dataclass(frozen=True)
class Classifications:
    """Classifier output for N frames.

    ``class_ids``/``scores``: [N, k] object classes, best first. ``scene_ids``/``scene_scores``: [N]
    (empty arrays when the model has no scene map). Names are looked up in ``class_names`` and
    ``scene_names``.
    """

    class_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    scene_ids: npt.NDArray[np.int64]
    scene_scores: npt.NDArray[np.float32]
    class_names: tuple[str, ...]
    scene_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def frame(self, i: int) -> FrameClassification:
        top = [Label(int(c), self.class_names[int(c)], float(s))
               for c, s in zip(self.class_ids[i], self.scores[i], strict=True)]
        scene = None
        if self.scene_ids.size:
            sid = int(self.scene_ids[i])
            scene = Label(sid, self.scene_names[sid], float(self.scene_scores[i]))
        return FrameClassification(top, scene)

    def frames(self) -> list[FrameClassification]:
        return [self.frame(i) for i in range(len(self))]
