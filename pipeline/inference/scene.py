"""Scene categories from object probabilities.

A scene map assigns each ImageNet class to one scene category (``pipeline/inference/data/scene_map.yaml`` documents
the built-in one). A frame's score for a category is the probability mass of its classes, so the
scene is computed with one matrix product per batch: ``probs [N, C] @ membership [C, S]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from pipeline.core.errors import SceneMapError


@dataclass(frozen=True)
class SceneMap:
    """Membership of each model class in one scene category."""

    categories: tuple[str, ...]
    membership: npt.NDArray[np.float32]  # [num_classes, num_categories], one 1.0 per row

    def scores(self, probs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probability mass per category for each row of ``probs`` ([N, C] -> [N, S])."""
        out: npt.NDArray[np.float32] = probs @ self.membership
        return out


def _parse_entry(entry: Any, names: dict[str, int], where: str) -> list[int]:
    if isinstance(entry, int) and not isinstance(entry, bool):
        return [entry]
    if isinstance(entry, str):
        if entry in names:
            return [names[entry]]
        lo, sep, hi = entry.partition("-")
        if sep and lo.strip().isdigit() and hi.strip().isdigit():
            return list(range(int(lo), int(hi) + 1))
    raise SceneMapError(f"{where}: {entry!r} is not a class index, an 'a-b' range or a class name "
                        "of this model")


def build_scene_map(spec: Any, class_names: list[str], background_class: int | None,
                    source: str) -> SceneMap:
    """Build a :class:`SceneMap` from a parsed scene-map document for a model's classes.

    Indices in ``spec`` are ImageNet-1k indices (no background); with a background class 0 they are
    shifted by one and the background class goes to the default category.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("categories"), dict) or not spec["categories"]:
        raise SceneMapError(f"{source}: expected a mapping with a non-empty 'categories:' mapping")
    default = str(spec.get("default", "other"))
    offset = 1 if background_class == 0 else 0
    n = len(class_names)
    name_to_index = {name: i - offset for i, name in enumerate(class_names)}
    categories = [str(c) for c in spec["categories"]]
    if default not in categories:
        categories.append(default)
    membership = np.zeros((n, len(categories)), dtype=np.float32)
    assigned = np.zeros(n, dtype=bool)
    for col, (category, entries) in enumerate(spec["categories"].items()):
        if not isinstance(entries, list):
            raise SceneMapError(f"{source}: categories.{category} must be a list")
        for entry in entries:
            for idx in _parse_entry(entry, name_to_index, f"{source}: categories.{category}"):
                row = idx + offset
                if not 0 <= row < n:
                    raise SceneMapError(f"{source}: categories.{category}: class {idx} is outside this "
                                        f"model's {n - offset} classes")
                if assigned[row]:
                    raise SceneMapError(f"{source}: class {idx} ({class_names[row]!r}) is listed in two "
                                        "categories; each class belongs to one")
                membership[row, col] = 1.0
                assigned[row] = True
    membership[~assigned, categories.index(default)] = 1.0
    return SceneMap(tuple(categories), membership)


def load_scene_map(path: Path | None, class_names: list[str], background_class: int | None) -> SceneMap:
    """Load ``path`` (or the built-in ImageNet map) for a model with ``class_names``."""
    if path is None:
        text = resources.files("pipeline.inference").joinpath("data/scene_map.yaml").read_text(encoding="utf-8")
        source = "built-in scene map"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SceneMapError(f"scene map {path} cannot be read: {exc}") from exc
        source = f"scene map {path}"
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SceneMapError(f"{source} is not valid YAML: {exc}") from exc
    return build_scene_map(spec, class_names, background_class, source)
