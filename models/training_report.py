"""The training report written beside a fine-tuned model: ``<model>.report/`` with ``report.json``,
``curves.png`` (loss and accuracy per epoch, training and validation) and ``confusion.png`` (the exported
model on the validation split).

The JSON holds the hyperparameters, the wall time, the per-epoch history, the validation confusion
matrix, and, with ``--unfreeze``, the comparison with the head alone on the same split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.evaluate import confusion_matrix, draw_confusion
from pipeline.core.errors import DatasetError

_COLOURS = {"train": (200, 120, 40), "validation": (40, 120, 230)}  # BGR


def report_dir(model: Path) -> Path:
    return model.with_name(model.name + ".report")


def _panel(title: str, series: dict[str, Sequence[float]], size: tuple[int, int] = (360, 480)) -> npt.NDArray[np.uint8]:
    """One line chart: each series against the epoch, with its title, axis range and legend."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, top, right, bottom = 50, 30, w - 15, h - 35
    values = [v for s in series.values() for v in s if np.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    epochs = max((len(s) for s in series.values()), default=1)
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    for k, (name, s) in enumerate(series.items()):
        pts = [(left + round((right - left) * i / max(1, epochs - 1)),
                bottom - round((bottom - top) * (v - lo) / (hi - lo))) for i, v in enumerate(s) if np.isfinite(v)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, _COLOURS[name], 2, cv2.LINE_AA)
        cv2.putText(img, name, (right - 110, top + 18 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _COLOURS[name], 1,
                    cv2.LINE_AA)
    for text, org in ((title, (left, 20)), (f"{hi:.3g}", (4, top + 10)), (f"{lo:.3g}", (4, bottom)),
                      ("epoch 1", (left, h - 12)), (f"{epochs}", (right - 20, h - 12))):
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def draw_curves(history: dict[str, list[float]], path: Path) -> None:
    loss = _panel("loss", {"train": history["train_loss"], "validation": history["val_loss"]})
    acc = _panel("accuracy", {"train": history["train_accuracy"], "validation": history["val_accuracy"]})
    if not cv2.imwrite(str(path), np.hstack([loss, acc])):
        raise DatasetError(f"cannot write {path}")


def write_training_report(model: Path, doc: dict[str, Any], options: Any, classes: Sequence[str],
                          val: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]) -> dict[str, Path]:
    """Write the report of the model at ``model``; ``doc`` is the result's JSON, ``val`` the validation labels
    and the exported model's probabilities on them. Returns the files written."""
    folder = report_dir(model)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "curves": folder / "curves.png", "confusion": folder / "confusion.png"}
    y, probs = val
    cm = confusion_matrix(y, probs.argmax(axis=1), len(classes))
    draw_confusion(cm, list(classes), list(classes), paths["confusion"])
    draw_curves(doc["history"], paths["curves"])
    report = {**doc, "hyperparameters": {k: v for k, v in asdict(options).items() if k != "progress"},
              "confusion": {"rows": list(classes), "columns": list(classes), "matrix": cm.tolist()},
              "files": {k: str(v) for k, v in paths.items()}}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths
