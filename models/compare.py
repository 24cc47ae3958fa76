"""`vigil models compare`: accuracy, size and speed of several classifiers on one labelled folder.

Given models are compared as they are; with ``variants`` the first model also gets an fp16 copy
(:func:`models.convert.convert_fp16`) and an int8 copy: onnxruntime static quantization (QDQ format,
per-channel int8 weights, uint8 activations, the output float; :mod:`models.quantize`) calibrated on images of
the dataset itself, after onnxruntime's quantization pre-processing (shape inference, graph optimisation).

For each model: accuracy and macro F1 on the dataset (see :mod:`models.evaluate`), file size,
parameters, median latency at batch 1, and the best throughput over a few batch sizes on this
machine. Results: a table on the terminal, ``compare.json``, and ``compare.png``, accuracy against
latency drawn with OpenCV.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from models.dataset import LoadedImages
from models.evaluate import (
    EvalOptions,
    evaluate_loaded,
    load_dataset,
    make_progress,
    model_input_size,
    progress_context,
)
from pipeline.bench.model import bench_model
from pipeline.core.errors import ModelError
from pipeline.inference.contract import load_onnx, set_metadata
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions


@dataclass(frozen=True)
class CompareOptions:
    variants: bool = True
    calibration_images: int = 64
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    bench_seconds: float = 1.0  # per batch size and model
    device: str = "cpu"
    strict_sizes: bool = False
    progress: bool = True
    seed: int = 0


@dataclass(frozen=True)
class ModelRow:
    name: str
    path: str
    accuracy: float
    f1_macro: float
    size_bytes: int
    parameters: int
    latency_ms_b1: float
    throughput: float  # images/s at best_batch
    best_batch: int


# ------------------------------------------------------------------------------------------ variants
def quantize_int8(src: Path, dst: Path, calibration: npt.NDArray[np.uint8]) -> Path:
    """Static int8 quantization of ``src`` calibrated on uint8 RGB frames [N, H, W, 3], with the defaults of
    `vigil models quantize` (:func:`models.quantize.quantize_static_int8`), unchecked: the comparison measures it.

    The copy carries the source's class names in its ``labels`` metadata (a labels file beside the
    source would not be beside the copy).
    """
    from models.quantize import QuantizeOptions, quantize_static_int8, write_record

    if len(calibration) == 0:
        raise ModelError("int8 quantization needs calibration images; the dataset gave none")
    with ModelRuntime(src, RuntimeOptions(device="cpu", warmup=False)) as runtime:
        tensor = runtime.prepare(calibration)  # what the model's input wants (uint8 NHWC here)
        labels, version = "\n".join(runtime.class_names), runtime.contract.version
    quantize_static_int8(src, dst, tensor, QuantizeOptions())
    write_record(dst, {"precision": "int8", "model_version": f"{version}-int8" if version else "int8",
                       "labels": labels})
    return dst


def make_variants(model: Path, calibration: npt.NDArray[np.uint8], out_dir: Path) -> list[Path]:
    """fp16 and int8 copies of ``model`` in ``out_dir``."""
    from models.convert import convert_fp16

    out_dir.mkdir(parents=True, exist_ok=True)
    fp16 = convert_fp16(model, out_dir / f"{model.stem}-fp16.onnx")
    with ModelRuntime(model, RuntimeOptions(device="cpu", warmup=False)) as runtime:
        half = load_onnx(fp16)
        set_metadata(half, {"labels": "\n".join(runtime.class_names)})  # its labels file is not beside the copy
        onnx.save(half, str(fp16))
    int8 = quantize_int8(model, out_dir / f"{model.stem}-int8.onnx", calibration)
    return [fp16, int8]


# ------------------------------------------------------------------------------------------ timing
def benchmark(model: Path, batch_sizes: Sequence[int], seconds: float, device: str) -> tuple[float, float, int]:
    """(median latency in ms at batch 1, best images/s, its batch size) for ``model`` on this machine.

    Throughput as the replicas run the model (`vigil bench model`: on CPU each batch split over one
    single-threaded lane per core); latency as one request sees it: one call alone, over every core.
    """
    sizes = sorted(set(batch_sizes))
    with ModelRuntime(model, RuntimeOptions(device=device, batch_size=max(sizes))) as runtime:
        rows = bench_model(runtime, sizes, seconds)
    with ModelRuntime(model, RuntimeOptions(device=device, batch_size=1, lanes=1)) as runtime:
        [single] = bench_model(runtime, [1], seconds)
    best = max(rows, key=lambda r: r.images_per_s)
    return single.latency_ms_p50, best.images_per_s, best.batch_size


# ------------------------------------------------------------------------------------------ driver
def _row(model: Path, data: LoadedImages, opts: CompareOptions, progress: Progress | None) -> ModelRow:
    report = evaluate_loaded(model, data, EvalOptions(device=opts.device, progress=False), progress)
    latency, throughput, best_batch = benchmark(model, opts.batch_sizes, opts.bench_seconds, opts.device)
    m = report["model"]
    return ModelRow(name=model.stem, path=str(model), accuracy=report["accuracy"], f1_macro=report["macro"]["f1"],
                    size_bytes=m["size_bytes"], parameters=m["parameters"], latency_ms_b1=latency,
                    throughput=throughput, best_batch=best_batch)


def compare(models: Sequence[Path], data_dir: Path, out_dir: Path,
            opts: CompareOptions | None = None) -> list[ModelRow]:
    """Compare ``models`` (plus fp16/int8 variants of the first) on ``data_dir``; write json and png."""
    opts = opts or CompareOptions()
    if not models:
        raise ModelError("give at least one model to compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress_context(make_progress(opts.progress)) as progress:
        data = load_dataset(data_dir, model_input_size(models[0]), opts.strict_sizes, progress)
        paths = list(models)
        if opts.variants:
            rng = np.random.default_rng(opts.seed)
            pick = rng.permutation(len(data.images))[:opts.calibration_images]
            paths += make_variants(models[0], data.images[np.sort(pick)], out_dir)
        task = progress.add_task("benchmarking", total=len(paths)) if progress else None
        rows = []
        for path in paths:
            rows.append(_row(path, data, opts, progress))
            if progress is not None and task is not None:
                progress.advance(task)
    (out_dir / "compare.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    plot(rows, out_dir / "compare.png")
    return rows


def print_table(rows: Sequence[ModelRow], console: Console) -> None:
    table = Table(title="model comparison")
    for col in ("model", "accuracy", "F1 (macro)", "size", "parameters", "latency b=1", "throughput"):
        table.add_column(col, justify="left" if col == "model" else "right")
    base = rows[0].size_bytes if rows else 1
    for r in rows:
        table.add_row(r.name, f"{r.accuracy:.3f}", f"{r.f1_macro:.3f}",
                      f"{r.size_bytes / 1e6:.1f} MB ({r.size_bytes / base:.0%})", f"{r.parameters:,}",
                      f"{r.latency_ms_b1:.1f} ms", f"{r.throughput:.0f}/s @ b={r.best_batch}")
    console.print(table)


def plot(rows: Sequence[ModelRow], path: Path, size: tuple[int, int] = (480, 720)) -> None:
    """Accuracy (y) against latency at batch 1 (x), one labelled point per model, drawn with OpenCV."""
    h, w = size
    left, right, top, bottom = 70, 30, 40, 60
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    lat = [r.latency_ms_b1 for r in rows]
    acc = [r.accuracy for r in rows]
    x_max = max(lat) * 1.15 if lat and max(lat) > 0 else 1.0
    y_lo = max(0.0, min(acc) - 0.05) if acc else 0.0
    y_hi = min(1.0, max(acc) + 0.02) if acc else 1.0
    y_hi = y_hi if y_hi > y_lo else y_lo + 0.05

    def xy(latency: float, accuracy: float) -> tuple[int, int]:
        x = left + (w - left - right) * latency / x_max
        y = h - bottom - (h - top - bottom) * (accuracy - y_lo) / (y_hi - y_lo)
        return round(x), round(y)

    cv2.line(img, (left, h - bottom), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, h - bottom), (0, 0, 0), 1)
    for i in range(5):
        xv, yv = x_max * i / 4, y_lo + (y_hi - y_lo) * i / 4
        px, _ = xy(xv, y_lo)
        _, py = xy(0, yv)
        cv2.putText(img, f"{xv:.1f}", (px - 12, h - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{yv:.3f}", (8, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "latency at batch 1 (ms)", (w // 2 - 90, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "accuracy vs latency", (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    colours = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140)]
    for i, r in enumerate(rows):
        px, py = xy(r.latency_ms_b1, r.accuracy)
        colour = colours[i % len(colours)]
        cv2.circle(img, (px, py), 6, colour, -1, cv2.LINE_AA)
        cv2.putText(img, str(i + 1), (px + 8, py - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        name = r.name if len(r.name) <= 44 else "~" + r.name[-43:]
        legend = f"{i + 1}  {name}: {r.accuracy:.3f} at {r.latency_ms_b1:.1f} ms"
        cv2.putText(img, legend, (left + 12, h - bottom - 12 - 16 * (len(rows) - 1 - i)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.42, colour, 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise ModelError(f"cannot write {path}")
