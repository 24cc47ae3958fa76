"""Class names for a model's outputs.

Resolution order (first that exists wins):

1. an explicit labels file (``--labels`` / ``inference.labels``);
2. the model's own ``labels`` metadata (fine-tuned and exported models carry it);
3. a file beside the model: ``<model>.labels.txt``, ``labels.txt`` or ``imagenet_labels.txt``;
4. the bundled ImageNet list (``pipeline/inference/data/labels/imagenet_1000.txt``) when the model has 1000 classes,
   or 1001 with a background class;
5. otherwise ``class_0 … class_N``, with a warning.

A labels file has one name per line, index i on line i. A file with one name fewer than the model's
classes is accepted when the model has a background class 0 (the name "background" is prepended).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from pipeline.core.errors import LabelsError
from pipeline.inference.contract import ModelContract

log = logging.getLogger(__name__)

SIDECAR_NAMES = ("{stem}.labels.txt", "labels.txt", "imagenet_labels.txt")


def read_labels_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LabelsError(f"labels file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"labels file {path} cannot be read as UTF-8 text: {exc}") from exc
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def _fit(names: list[str], contract: ModelContract, source: str) -> list[str]:
    n = contract.num_classes
    if len(names) == n:
        return names
    if contract.background_class == 0 and len(names) == n - 1:
        return ["background", *names]
    raise LabelsError(f"{source} has {len(names)} class names but the model has {n} classes; use the "
                      f"labels file that belongs to this model (one name per line, {n} lines)")


def bundled_imagenet() -> list[str]:
    text = resources.files("pipeline.inference").joinpath("data/labels/imagenet_1000.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def resolve_labels(contract: ModelContract, model_path: Path | None, labels_path: Path | None) -> list[str]:
    """Find the class names for ``contract`` (see the module docstring for the order)."""
    if labels_path is not None:
        return _fit(read_labels_file(labels_path), contract, f"labels file {labels_path}")
    if contract.metadata.get("labels"):
        names = contract.metadata["labels"].split("\n")
        return _fit(names, contract, "the model's labels metadata")
    if model_path is not None:
        for pattern in SIDECAR_NAMES:
            candidate = model_path.parent / pattern.format(stem=model_path.stem)
            if candidate.is_file():
                return _fit(read_labels_file(candidate), contract, f"labels file {candidate}")
    n = contract.num_classes
    if n == 1000 or (n == 1001 and contract.background_class == 0):
        return _fit(bundled_imagenet(), contract, "the bundled ImageNet labels")
    log.warning("no labels found for a %d-class model; using class_0..class_%d (pass --labels FILE)", n, n - 1)
    return [f"class_{i}" for i in range(n)]
