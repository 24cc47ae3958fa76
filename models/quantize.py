"""`vigil models quantize`: a static int8 copy of a model, checked against fp32 on the user's own frames.

Frames (:mod:`models.frames`: image folders such as `vigil capture` writes, video files, the configured
cameras) are split per source into runs of ``run_length`` consecutive frames; evenly spaced runs, about
``holdout_fraction`` of them, are held out, the others calibrate. Consecutive frames of a video are nearly
the same picture, so holding out whole runs, not every other frame, keeps the held-out frames unlike the
calibration ones.

Quantization is onnxruntime's static quantization, after its pre-processing (shape inference, graph
optimisation): QDQ format, int8 weights (per channel by default), uint8 activations, ranges calibrated
with MinMax, Entropy or Percentile on the calibration frames. The classifier head's outputs (logits,
probabilities) stay float, so that scores stay continuous and no top classes tie (:func:`classifier_head`).
``exclude`` (node names or op types) and ``exclude_first`` (the first N convolutions) keep more nodes float.

Then fp32 and int8 classify the held-out frames through :class:`~pipeline.inference.runtime.ModelRuntime`
(as a replica would) and the top-1 agreement of each source is measured, with, for scale, fp32's agreement
with itself when each pixel moves by up to one grey level (``fp32_jitter_agreement``: a scene whose top-1
flips under that noise cannot keep its top-1 under int8 either). Both models' images/s are measured in the
same run. The int8 model records the worst source's agreement and the rest in its ``metadata_props``
(:mod:`pipeline.inference.precision`), which `vigil run` checks against ``inference.min_int8_agreement``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from models.frames import FrameSet
from pipeline.bench.model import bench_model
from pipeline.core.errors import ModelError
from pipeline.inference import precision
from pipeline.inference.contract import load_onnx, read_contract, set_metadata
from pipeline.inference.model_store import sha256_file
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
MIN_HELDOUT = 10  # frames, all sources: fewer give an agreement too coarse to gate on
_CALIBRATION_BATCH = 8  # histogram calibrators (entropy, percentile) need batches of one size
_HEAD_END = frozenset({"Conv", "Gemm", "MatMul"})  # the classifier head starts at the last of these
_HEAD_PASS = frozenset({"Softmax", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Add"})


@dataclass(frozen=True)
class QuantizeOptions:
    holdout_fraction: float = 0.3
    run_length: int = 10  # consecutive frames held out (or calibrated on) together
    calibration_frames: int = 200  # at most, evenly sampled from every source's calibration runs
    method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights (CPUs without VNNI)
    exclude: tuple[str, ...] = ()  # node names or op types kept float
    exclude_first: int = 0  # the first N Conv nodes kept float
    batch_sizes: tuple[int, ...] = (1, 8)  # speed at these batches (1 and the served batch)
    bench_seconds: float = 2.0  # per model and batch size; 0: no speed measurement
    seed: int = 0


@dataclass(frozen=True)
class SourceAgreement:
    name: str
    calibration_frames: int  # of this source's calibration runs (before the overall cap)
    heldout_frames: int
    agreement: float  # top-1 of int8 == top-1 of fp32, held-out frames
    fp32_jitter_agreement: float  # top-1 of fp32 on the frames +-1 grey level == top-1 of fp32


@dataclass(frozen=True)
class SpeedRow:
    batch_size: int
    lanes: int
    fp32_images_per_s: float
    int8_images_per_s: float


@dataclass(frozen=True)
class QuantizeReport:
    out: str
    fp32_model: str
    fp32_sha256: str
    agreement: float  # the worst source's: what is recorded and checked
    pooled_agreement: float  # all held-out frames together
    heldout_frames: int
    calibration_frames: int  # calibrated on
    sources: list[SourceAgreement]
    method: dict[str, Any]
    speed: list[SpeedRow] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ split
def split_runs(n: int, holdout_fraction: float, run_length: int) -> tuple[npt.NDArray[np.int64],
                                                                          npt.NDArray[np.int64]]:
    """(calibration, held-out) indices of ``n`` frames: runs of ``run_length``, evenly spaced runs held out.

    Run ``r`` is held out when ``floor((r + 1) f) > floor(r f)`` (``f`` the fraction): the held-out runs are
    spread over the whole source. A source of fewer runs than that needs shorter runs: they shrink to a
    quarter of it, so that it has both.
    """
    if not 0 < holdout_fraction < 1:
        raise ModelError(f"the held-out fraction must be between 0 and 1, got {holdout_fraction}")
    run = max(1, min(run_length, n // 4))
    runs = np.arange(n) // run
    held = np.floor((runs + 1) * holdout_fraction) > np.floor(runs * holdout_fraction)
    if n >= 2 and not held.any():
        held = runs == runs.max() // 2
    idx = np.arange(n, dtype=np.int64)
    return idx[~held], idx[held]


def _even(indices: npt.NDArray[np.int64], count: int) -> npt.NDArray[np.int64]:
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(np.int64)]


# ------------------------------------------------------------------------------------------ quantize
def classifier_head(model: onnx.ModelProto) -> list[str]:
    """The nodes from each graph output back to the last Conv/Gemm/MatMul (softmax, reshape, logits).

    Their outputs stay float (:func:`excluded_nodes`, :func:`float_outputs`): quantized, the logits take 256
    values and the softmax's probabilities 1/255 steps, so the top classes of an unsure frame tie (on
    bikes.mp4 one frame in 18) and the argmax of a tie is the lower class index. The logits' weights stay
    int8 in the file; their arithmetic is a few per mille of the model's.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    head: list[str] = []
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.name not in head:
            head.append(node.name)
            if node.op_type in _HEAD_END or node.op_type not in _HEAD_PASS or not node.input:
                break
            node = producer.get(node.input[0])
    return head


def excluded_nodes(model: onnx.ModelProto, exclude: Sequence[str], exclude_first: int) -> list[str]:
    """Names of the nodes kept float: the :func:`classifier_head` but its Conv/Gemm/MatMul (quantized, its
    output then made float again by :func:`float_outputs`), ``exclude`` (names or op types), and the first
    ``exclude_first`` Conv nodes."""
    nodes = list(model.graph.node)
    names = {n.name for n in nodes}
    types = {n.op_type for n in nodes}
    unknown = [e for e in exclude if e not in names and e not in types]
    if unknown:
        raise ModelError(f"--exclude {', '.join(unknown)}: no node or op type of the model has that name (op "
                         f"types here: {', '.join(sorted(types))})")
    head = set(classifier_head(model))
    keep = [n.name for n in nodes if n.name in head and n.op_type not in _HEAD_END]
    keep += [n.name for n in nodes if n.name in exclude or n.op_type in exclude]
    keep += [n.name for n in nodes if n.op_type == "Conv"][:exclude_first]
    return list(dict.fromkeys(keep))


def float_outputs(model: onnx.ModelProto, names: Sequence[str]) -> int:
    """Remove the QuantizeLinear -> DequantizeLinear pairs on the outputs of the nodes ``names``, so their
    consumers read them float; returns the pairs removed."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = [o for n in model.graph.node if n.name in names for o in n.output]
    gone: list[onnx.NodeProto] = []
    for out in outputs:
        for q in [c for c in consumers.get(out, []) if c.op_type == "QuantizeLinear"]:
            for dq in [c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
                for c in consumers.get(dq.output[0], []):
                    c.input[:] = [out if i == dq.output[0] else i for i in c.input]
                gone.append(dq)
            gone.append(q)
    for node in gone:
        model.graph.node.remove(node)
    return len(gone) // 2


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a tensor, in batches of one size (a remainder that
    does not fill one is left out)."""

    def __init__(self, input_name: str, tensor: npt.NDArray[Any]) -> None:
        b = min(_CALIBRATION_BATCH, len(tensor))
        self._batches = [{input_name: tensor[i:i + b]} for i in range(0, len(tensor) - b + 1, b)]
        self._next = 0
        self.frames = b * len(self._batches)

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return self._batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def quantize_static_int8(src: Path, dst: Path, calibration: npt.NDArray[Any], opts: QuantizeOptions) -> dict[str, Any]:
    """Static int8 quantization of ``src`` into ``dst``, calibrated on ``calibration`` (the model's input
    tensor, as :meth:`ModelRuntime.prepare` makes it); returns how (the ``int8_method`` record)."""
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if opts.method not in METHODS:
        raise ModelError(f"calibration method {opts.method!r}: use {', '.join(METHODS)}")
    if len(calibration) == 0:
        raise ModelError("int8 quantization needs calibration frames; none were given")
    input_name = read_contract(load_onnx(src), str(src)).input_name

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]
        pass

    reader = Reader(input_name, calibration)

    with tempfile.TemporaryDirectory(prefix="vigil-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # Without pre-processing, quantize_static logs a "please pre-process" warning; sympy (for
            # symbolic shapes) is not a dependency, and the graph's shapes are static anyway.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            prepared = onnx.load(str(pre))
            keep = excluded_nodes(prepared, opts.exclude, opts.exclude_first)
            head = classifier_head(prepared)
            logits = [n.name for n in prepared.graph.node if n.name in head and n.op_type in _HEAD_END]
            quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
                            per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                              "percentile": CalibrationMethod.Percentile}[opts.method])
        except ModelError:
            raise
        except Exception as exc:  # the quantizer raises bare ValueError/RuntimeError/KeyError on odd graphs
            raise ModelError(f"cannot quantize {src} to int8: {type(exc).__name__}: {exc}") from exc
    model = load_onnx(dst)
    float_outputs(model, logits)
    onnx.save(model, str(dst))
    return {"format": "QDQ", "weights": "int8 " + ("per-channel" if opts.per_channel else "per-tensor")
            + (" 7-bit" if opts.reduce_range else ""), "activations": "uint8", "calibration": opts.method,
            "calibration_frames": reader.frames, "float_nodes": len(keep), "float_logits": bool(logits),
            "exclude": list(opts.exclude), "exclude_first": opts.exclude_first, "onnxruntime": ort_version}


# ------------------------------------------------------------------------------------------ measure
def _top1(runtime: ModelRuntime, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    out = [runtime.probabilities(frames[i:i + 32]).argmax(axis=1) for i in range(0, len(frames), 32)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def _jitter(frames: npt.NDArray[np.uint8], seed: int) -> npt.NDArray[np.uint8]:
    noise = np.random.default_rng(seed).integers(-1, 2, size=frames.shape, dtype=np.int16)
    return np.asarray(np.clip(frames.astype(np.int16) + noise, 0, 255), dtype=np.uint8)


def measure_speed(fp32: Path, int8: Path, batch_sizes: Sequence[int], seconds: float) -> list[SpeedRow]:
    """Images/s of both models at each batch size, as a replica runs them on CPU (lanes side by side)."""
    sizes = sorted(set(batch_sizes))
    rows: dict[Path, list[Any]] = {}
    lanes = 1
    for path in (fp32, int8):
        with ModelRuntime(path, RuntimeOptions(device="cpu", batch_size=max(sizes))) as runtime:
            rows[path] = bench_model(runtime, sizes, seconds)
            lanes = runtime.lanes
    return [SpeedRow(b, lanes, rows[fp32][i].images_per_s, rows[int8][i].images_per_s) for i, b in enumerate(sizes)]


# ------------------------------------------------------------------------------------------ record
def write_record(path: Path, values: dict[str, Any]) -> None:
    """Set ``values`` in the ``metadata_props`` of the model at ``path`` (the keys of
    :mod:`pipeline.inference.precision`; dicts and lists as JSON)."""
    model = load_onnx(path)
    set_metadata(model, {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in values.items()})
    onnx.save(model, str(path))


def record_values(report: QuantizeReport) -> dict[str, Any]:
    """What an int8 model records of its :class:`QuantizeReport` (see :mod:`pipeline.inference.precision`)."""
    return {
        precision.PRECISION: "int8", precision.AGREEMENT: f"{report.agreement:.6f}",
        precision.HELDOUT_FRAMES: report.heldout_frames, precision.FP32_SHA256: report.fp32_sha256,
        precision.FP32_MODEL: report.fp32_model, precision.METHOD: report.method,
        precision.SOURCES: {s.name: {"agreement": round(s.agreement, 6), "frames": s.heldout_frames,
                                     "fp32_jitter_agreement": round(s.fp32_jitter_agreement, 6)}
                            for s in report.sources},
    }


# ------------------------------------------------------------------------------------------ driver
def _splits(sources: Sequence[FrameSet], opts: QuantizeOptions) -> list[tuple[FrameSet, Any, Any]]:
    if not sources:
        raise ModelError("no frames to calibrate on: give --frames FOLDER_OR_VIDEO or --config CONFIG")
    splits = [(s, *split_runs(len(s.frames), opts.holdout_fraction, opts.run_length)) for s in sources]
    small = [s.name for s, cal, held in splits if len(cal) == 0 or len(held) == 0]
    if small:
        raise ModelError(f"too few frames to both calibrate and check: {', '.join(small)} (at least 2 each)")
    total = sum(len(held) for _, _, held in splits)
    if total < MIN_HELDOUT:
        raise ModelError(f"only {total} held-out frame(s): give more frames (at least {MIN_HELDOUT} held out), or "
                         "a larger --holdout-fraction")
    return splits


def _check(src: Path, dst: Path, splits: list[tuple[FrameSet, Any, Any]], seed: int) -> list[SourceAgreement]:
    opts = RuntimeOptions(device="cpu", warmup=False)
    with ModelRuntime(src, opts) as fp32, ModelRuntime(dst, opts) as int8:
        out = []
        for s, cal, held in splits:
            frames = s.frames[held]
            ref = _top1(fp32, frames)
            out.append(SourceAgreement(s.name, len(cal), len(held), float(np.mean(_top1(int8, frames) == ref)),
                                       float(np.mean(_top1(fp32, _jitter(frames, seed)) == ref))))
    return out


def quantize(src: Path, out: Path, sources: Sequence[FrameSet], opts: QuantizeOptions | None = None) -> QuantizeReport:
    """Quantize ``src`` to int8 at ``out`` on ``sources``' calibration runs; check it on their held-out runs."""
    opts = opts or QuantizeOptions()
    t0 = time.monotonic()
    splits = _splits(sources, opts)
    with ModelRuntime(src, RuntimeOptions(device="cpu", warmup=False)) as runtime:
        calibration = np.concatenate([s.frames[cal] for s, cal, _ in splits])
        count = min(opts.calibration_frames, len(calibration))
        count -= count % _CALIBRATION_BATCH if count >= _CALIBRATION_BATCH else 0  # whole batches only
        picked = _even(np.arange(len(calibration), dtype=np.int64), count)
        tensor = runtime.prepare(calibration[picked])  # what the model's input wants (uint8 NHWC here)
        labels, version = "\n".join(runtime.class_names), runtime.contract.version
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("quantizing %s on %d calibration frame(s) (%s)", src, len(tensor), opts.method)
    method = quantize_static_int8(src, out, tensor, opts)
    method["holdout"] = f"runs of {opts.run_length} frames, {opts.holdout_fraction:g} held out"
    write_record(out, {"labels": labels, "model_version": f"{version}-int8" if version else "int8"})
    agreements = _check(src, out, splits, opts.seed)
    held = sum(a.heldout_frames for a in agreements)
    report = QuantizeReport(
        out=str(out), fp32_model=str(src.resolve()), fp32_sha256=sha256_file(src),
        agreement=min(a.agreement for a in agreements),
        pooled_agreement=sum(a.agreement * a.heldout_frames for a in agreements) / held, heldout_frames=held,
        calibration_frames=len(tensor), sources=agreements, method=method)
    write_record(out, record_values(report))
    speed = measure_speed(src, out, opts.batch_sizes, opts.bench_seconds) if opts.bench_seconds > 0 else []
    return replace(report, speed=speed, seconds=time.monotonic() - t0)
