"""``vigil models build-engine``: build a model's TensorRT engine ahead, and check it against fp32 on CPU.

The engine lands in the folder :mod:`pipeline.inference.engine_cache` keys by model, GPU, TensorRT,
precision and batch, where every runtime with the same settings finds it (``vigil run``, replicas,
``vigil bench``), so none builds it on its first batch. Building goes through the same
:class:`~pipeline.inference.runtime.ModelRuntime` the pipeline uses, warmed up at batch 1 and at the full
batch (the shape profile's ends). ``--check`` classifies photographs with the engine and with the fp32
model on CPU and reports each top-1: fp16 must not change what the model says.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.core.config import GpuOptions
from pipeline.core.errors import ModelError
from pipeline.core.frame import Frame
from pipeline.core.preprocess import resize
from pipeline.inference.engine_cache import engine_dir, engine_files, engine_key, gpu_identity, tensorrt_version
from pipeline.inference.providers import cuda_device_count
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions


class EngineBuildError(ModelError):
    """The engine cannot be built here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Agreement:
    image: str
    reference: str  # top-1 of the fp32 model on CPU
    engine: str  # top-1 of the engine

    @property
    def same(self) -> bool:
        return self.reference == self.engine


@dataclass(frozen=True)
class EngineBuild:
    folder: Path
    files: list[Path]
    seconds: float
    agreement: list[Agreement]


def tensorrt_problem(device_id: int) -> str | None:
    """Why the TensorRT provider cannot run on this machine, with what to install; None when it can."""
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return ("this onnxruntime has no TensorRT provider: install onnxruntime-gpu (pip uninstall onnxruntime; "
                "pip install onnxruntime-gpu)")
    count = cuda_device_count()
    if count == 0:
        return "no CUDA device found (no NVIDIA driver or no GPU): TensorRT engines are built on the GPU they run on"
    if device_id >= count:
        return f"--device-id {device_id}, but this machine has {count} CUDA device(s)"
    if tensorrt_version() is None:
        return ("TensorRT's library (libnvinfer) was not found: pip install the TensorRT wheels that match "
                "onnxruntime-gpu's CUDA (e.g. tensorrt-cu12-libs or tensorrt-cu13-libs) and put their lib folder "
                "on LD_LIBRARY_PATH")
    return None


def top1_agreement(reference: ModelRuntime, candidate: ModelRuntime,
                   images: Sequence[tuple[str, Frame]]) -> list[Agreement]:
    """Each image's top-1 by ``reference`` and by ``candidate`` (frames resized to each model's input), both
    named by the reference's labels: the models are compared by class index, whatever labels each found."""
    out = []
    for name, rgb in images:
        top = []
        for rt in (reference, candidate):
            h, w = rt.input_size
            top.append(int(rt.probabilities(resize(rgb, h, w)[np.newaxis])[0].argmax()))
        out.append(Agreement(name, reference.class_names[top[0]], reference.class_names[top[1]]))
    return out


def _model_bytes(model: Path) -> bytes:
    try:
        return model.read_bytes()  # what the runtime hashes for the engine's folder
    except OSError as exc:
        raise EngineBuildError(f"model file {model} cannot be read: {exc.strerror}; pass an ONNX file, or run "
                               "`vigil models fetch`") from exc


def build_engine(model: Path, *, batch_size: int, gpu: GpuOptions, engine_root: Path,
                 check: Sequence[tuple[str, Frame]] = ()) -> EngineBuild:
    """Build (or find) the engine of ``model`` for this GPU; raise :class:`EngineBuildError` when it cannot."""
    problem = tensorrt_problem(gpu.device_id)
    if problem is not None:
        raise EngineBuildError(f"cannot build a TensorRT engine for {model}: {problem}")
    gpu = gpu.model_copy(update={"tensorrt": True})
    key = engine_key(_model_bytes(model), gpu=gpu_identity(gpu.device_id) or f"cuda{gpu.device_id}",
                     tensorrt=tensorrt_version() or "unknown", fp16=gpu.tensorrt_fp16, max_batch=batch_size)
    folder = engine_dir(engine_root, key)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    options = RuntimeOptions(device="cuda", batch_size=batch_size, gpu=gpu, engine_cache_dir=str(engine_root))
    with ModelRuntime(model, options) as engine:  # opening warms up at batch 1 and at batch_size: the build
        if engine.provider != "TensorrtExecutionProvider":
            raise EngineBuildError(f"onnxruntime did not start TensorRT for {model} (it runs on {engine.provider}); "
                                   "see the log line above for why")
        seconds = time.monotonic() - t0
        agreement: list[Agreement] = []
        if check:
            with ModelRuntime(model, RuntimeOptions(device="cpu", warmup=False)) as reference:
                agreement = top1_agreement(reference, engine, check)
    files = engine_files(folder)
    if not files:
        raise EngineBuildError(f"TensorRT ran but wrote no engine to {folder}: is the folder writable?")
    return EngineBuild(folder, files, seconds, agreement)
