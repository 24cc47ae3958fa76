"""`vigil evaluate`: how good a classifier is on a labelled image folder.

The dataset's class folders are matched to the model's classes by :class:`pipeline.core.class_names.ClassNames`:
the full name or any synonym (``hotdog``, ``Egyptian_cat``), case-insensitively with ``_`` for spaces, the
class index (``286_Egyptian_cat``) or its WordNet id (``n02124075``); a folder that matches nothing is
reported with the nearest class names. Predictions are the model's top-1 over *all* its classes; a
prediction that is none of the dataset's classes is an error, shown in an extra ``(other)`` column of
the confusion matrix.

Metrics: accuracy; top-5 accuracy when the model has more than 5 classes; precision, recall and F1
per class and their macro (unweighted mean) and weighted (by support) averages, with 0 where a ratio
is 0/0 (a class never predicted has precision 0); the confusion matrix (rows: true class, columns:
predicted); throughput of the runtime during the evaluation; model size and parameters.
Outputs: ``report.json``, ``confusion.csv`` and ``confusion.png`` in the output folder.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from models.dataset import ImageFolder, LoadedImages
from models.info import model_info
from pipeline.core.class_names import ClassNames
from pipeline.core.errors import DatasetError
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

OTHER = "(other)"
IntArray = npt.NDArray[np.int64]


def make_progress(enabled: bool = True) -> Progress:
    """The progress bar used by the model lab (on stderr; disabled in tests that do not want it)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=True)


def progress_context(progress: Progress | None) -> AbstractContextManager[Any]:
    return progress if progress is not None else nullcontext()


# ------------------------------------------------------------------------------------------ classes
def map_classes(dataset_classes: Sequence[str], model_classes: Sequence[str]) -> list[int]:
    """Index of each dataset class among the model's classes (rules: :mod:`pipeline.core.class_names`)."""
    names = ClassNames(model_classes)
    out: list[int] = []
    problems: list[str] = []
    for folder in dataset_classes:
        found = names.find(folder)
        if len(found) == 1:
            out.append(found[0])
        else:
            problems.append(names.explain(folder))
    if problems:
        raise DatasetError(f"class folder(s) do not name one class of the model each: {'; '.join(problems)}. "
                           "Name each folder after a class (any synonym; case and _ for spaces do not matter), "
                           "its index (286_Egyptian_cat) or WordNet id, or fine-tune a model for your classes "
                           "(`vigil models finetune`)")
    dupes = {model_classes[i] for i in out if out.count(i) > 1}
    if dupes:
        raise DatasetError(f"several class folders are the same model class: {', '.join(sorted(dupes))}")
    return out


def confusion_matrix(y_true: IntArray, y_pred: IntArray, n_classes: int) -> IntArray:
    """[n_classes, n_classes (+1 when some prediction is ``n_classes`` = none of them)] counts."""
    cols = n_classes + 1 if bool((y_pred >= n_classes).any()) else n_classes
    cm = np.zeros((n_classes, cols), dtype=np.int64)
    np.add.at(cm, (y_true, np.minimum(y_pred, cols - 1)), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def compute_metrics(y_true: IntArray, y_pred: IntArray, classes: Sequence[str],
                    top5_hits: npt.NDArray[np.bool_] | None = None) -> dict[str, Any]:
    """Metrics for dataset-class indices ``y_true`` and predictions ``y_pred`` (``len(classes)`` = other)."""
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(classes):
        tp = float(cm[c, c])
        p, r = _ratio(tp, float(cm[:, c].sum())), _ratio(tp, float(cm[c].sum()))
        per_class[name] = {"precision": p, "recall": r, "f1": _ratio(2 * p * r, p + r), "support": int(cm[c].sum())}
    support = np.array([v["support"] for v in per_class.values()], dtype=np.float64)

    def avg(key: str, weights: npt.NDArray[np.float64] | None) -> float:
        values = np.array([v[key] for v in per_class.values()])
        return float(np.average(values, weights=weights)) if values.size else 0.0

    return {
        "samples": len(y_true),
        "accuracy": _ratio(float((y_true == y_pred).sum()), len(y_true)),
        "top5_accuracy": float(top5_hits.mean()) if top5_hits is not None and len(top5_hits) else None,
        "per_class": per_class,
        "macro": {m: avg(m, None) for m in ("precision", "recall", "f1")},
        "weighted": {m: avg(m, support if support.sum() else None) for m in ("precision", "recall", "f1")},
        "confusion": {"rows": list(classes), "columns": [*classes, *([OTHER] if cm.shape[1] > k else [])],
                      "matrix": cm.tolist()},
    }


# ------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 32
    device: str = "cpu"
    strict_sizes: bool = False
    progress: bool = True
    labels: Path | None = None


def predict(runtime: ModelRuntime, images: npt.NDArray[np.uint8], batch_size: int,
            advance: Callable[[int], None] | None = None) -> tuple[npt.NDArray[np.float32], float]:
    """Probabilities for ``images`` in batches, and the seconds spent in the model."""
    parts: list[npt.NDArray[np.float32]] = []
    seconds = 0.0
    for i in range(0, len(images), batch_size):
        t0 = time.perf_counter()
        parts.append(runtime.probabilities(images[i:i + batch_size]))
        seconds += time.perf_counter() - t0
        if advance is not None:
            advance(len(parts[-1]))
    return (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)), seconds


def evaluate_loaded(model: Path, data: LoadedImages, opts: EvalOptions,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on already loaded images; the report as a JSON-ready dictionary."""
    # One batch at a time over every core (lanes=1): split into single-threaded lanes, as the replicas
    # run it, a batch called from this one thread would use one core.
    runtime_opts = RuntimeOptions(device=opts.device, batch_size=opts.batch_size, labels=opts.labels, lanes=1)
    with ModelRuntime(model, runtime_opts) as runtime:
        mapping = map_classes(data.classes, runtime.class_names)
        task = progress.add_task(f"evaluating {model.name}", total=len(data.images)) if progress else None

        def advance(n: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task, n)

        probs, seconds = predict(runtime, data.images, opts.batch_size, advance)
        provider, name, version = runtime.provider, runtime.name, runtime.version
    to_dataset = np.full(probs.shape[1], len(data.classes), dtype=np.int64)
    to_dataset[mapping] = np.arange(len(mapping))
    y_pred = to_dataset[probs.argmax(axis=1)]
    top5 = None
    if probs.shape[1] > 5:
        best5 = np.argsort(-probs, axis=1)[:, :5]
        top5 = (best5 == np.asarray(mapping)[data.labels][:, None]).any(axis=1)
    metrics = compute_metrics(data.labels, y_pred, data.classes, top5)
    info = model_info(model, opts.labels)
    return {
        "model": {"path": str(model), "name": name, "version": version, "size_bytes": info["size_bytes"],
                  "parameters": info["parameters"], "sha256": info["sha256"], "provider": provider},
        **metrics,
        "throughput": {"images_per_s": _ratio(len(data.images), seconds), "batch_size": opts.batch_size,
                       "seconds": seconds},
        "predictions": [{"path": str(p), "true": data.classes[t], "predicted": _pred_name(int(c), data.classes)}
                        for p, t, c in zip(data.paths, data.labels, y_pred, strict=True)],
    }


def _pred_name(index: int, classes: Sequence[str]) -> str:
    return classes[index] if index < len(classes) else OTHER


def load_dataset(data_dir: Path, size: tuple[int, int], strict_sizes: bool,
                 progress: Progress | None) -> LoadedImages:
    folder = ImageFolder.scan(data_dir)
    task = progress.add_task(f"loading {data_dir.name}", total=len(folder)) if progress else None

    def tick() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    return folder.load(size, strict_sizes=strict_sizes, on_image=tick)


def model_input_size(model: Path) -> tuple[int, int]:
    from pipeline.inference.contract import load_onnx, read_contract

    contract = read_contract(load_onnx(model), str(model))
    return contract.height, contract.width


def evaluate(model: Path, data_dir: Path, out_dir: Path | None, opts: EvalOptions | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on the image folder ``data_dir``; write the report files to ``out_dir``."""
    opts = opts or EvalOptions()
    with progress_context(make_progress(opts.progress)) as progress:
        data = load_dataset(data_dir, model_input_size(model), opts.strict_sizes, progress)
        report = evaluate_loaded(model, data, opts, progress)
    report["dataset"] = {"path": str(data_dir), "classes": list(data.classes),
                         "counts": {c: int((data.labels == i).sum()) for i, c in enumerate(data.classes)}}
    if out_dir is not None:
        write_report(report, out_dir)
    return report


# ------------------------------------------------------------------------------------------ outputs
def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "csv": out_dir / "confusion.csv", "png": out_dir / "confusion.png"}
    conf = report["confusion"]
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *conf["columns"]])
        for name, row in zip(conf["rows"], conf["matrix"], strict=True):
            writer.writerow([name, *row])
    draw_confusion(np.array(conf["matrix"], dtype=np.int64), conf["rows"], conf["columns"], paths["png"])
    report["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths


def _short(name: str, n: int = 22) -> str:
    first = name.split(",", maxsplit=1)[0].strip()
    return first if len(first) <= n else first[:n - 1] + "…"


def _text(img: npt.NDArray[np.uint8], text: str, org: tuple[int, int], scale: float,
          color: tuple[int, int, int] = (0, 0, 0)) -> None:
    cv2.putText(img, text.replace("…", "~"), org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_confusion(cm: IntArray, rows: Sequence[str], cols: Sequence[str], path: Path) -> None:
    """A heatmap (row-normalised colour, counts written in) with class names on both axes."""
    cell = int(max(28, min(64, 640 // max(1, len(cols)))))
    font = 0.4
    label_w = 8 * max(len(_short(n)) for n in [*rows, *cols]) + 16
    top, left = label_w + 30, label_w + 30
    img = np.full((top + cell * len(rows) + 10, left + cell * len(cols) + 10, 3), 255, dtype=np.uint8)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    colours = cv2.applyColorMap((share * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    for r in range(len(rows)):
        for c in range(len(cols)):
            y, x = top + r * cell, left + c * cell
            img[y:y + cell, x:x + cell] = colours[r, c]
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (255, 255, 255), 1)
            fg = (0, 0, 0) if share[r, c] > 0.6 else (255, 255, 255)
            _text(img, str(int(cm[r, c])), (x + 4, y + cell // 2 + 4), font, fg)
        _text(img, _short(rows[r]), (8, top + r * cell + cell // 2 + 4), font)
    strip = np.full((cell * len(cols), label_w, 3), 255, dtype=np.uint8)
    for c, name in enumerate(cols):
        _text(strip, _short(name), (4, c * cell + cell // 2 + 4), font)
    rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    img[top - label_w - 4:top - 4, left:left + cell * len(cols)] = rotated
    _text(img, "true \\ predicted", (8, 20), 0.5)
    if not cv2.imwrite(str(path), img):
        raise DatasetError(f"cannot write {path}")


def print_summary(report: dict[str, Any], console: Console) -> None:
    """A readable terminal summary: headline metrics, then one row per class."""
    m = report["model"]
    t5 = report.get("top5_accuracy")
    console.print(f"[bold]{m['name']}[/] ({m['version']}) on {report.get('dataset', {}).get('path', '?')}: "
                  f"{report['samples']} images, {m['size_bytes'] / 1e6:.1f} MB, {m['parameters']:,} parameters")
    console.print(f"accuracy [bold]{report['accuracy']:.3f}[/]" + (f"  top-5 {t5:.3f}" if t5 is not None else "")
                  + f"  macro F1 {report['macro']['f1']:.3f}  weighted F1 {report['weighted']['f1']:.3f}"
                  + f"  throughput {report['throughput']['images_per_s']:.0f} images/s ({m['provider']})")
    table = Table(show_edge=False)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, v in report["per_class"].items():
        table.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    for avg in ("macro", "weighted"):
        a = report[avg]
        table.add_row(f"[italic]{avg} avg[/]", f"{a['precision']:.3f}", f"{a['recall']:.3f}", f"{a['f1']:.3f}",
                      str(report["samples"]))
    console.print(table)
    if "files" in report:
        console.print("wrote " + ", ".join(report["files"].values()))
