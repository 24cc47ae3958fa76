"""Where a TensorRT engine is cached, and whether one was built ahead.

An engine is valid only for the model it was built from, the GPU (its compute capability), the
TensorRT and onnxruntime builds, the precision and the batch profile. Each such combination gets a
folder of its own under the engine cache (``inference.gpu.tensorrt_cache_dir``, default
``<model cache>/tensorrt``): ``<model sha256[:16]>-<gpu>-trt<version>-ort<version>-<fp16|fp32>-b<max batch>``.
So a new model, a driver upgrade that changes TensorRT, or a move to another GPU builds a new engine
instead of loading one that TensorRT would reject, and ``vigil models build-engine`` can build it ahead
(minutes on a large batch) where the pipeline would otherwise build it on its first batch.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

_NVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll")
ENGINE_SUFFIXES = (".engine",)


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT engine depends on."""

    model_sha256: str
    gpu: str  # e.g. "NVIDIA H200 sm90"
    tensorrt: str  # e.g. "10.13.0"
    onnxruntime: str
    fp16: bool
    max_batch: int

    def folder_name(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-").lower() or "gpu"
        precision = "fp16" if self.fp16 else "fp32"
        return (f"{self.model_sha256[:16]}-{gpu}-trt{self.tensorrt}-ort{self.onnxruntime}-{precision}"
                f"-b{self.max_batch}")


def model_sha256(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


def gpu_identity(device_id: int) -> str | None:
    """The CUDA device's name and compute capability (``NVIDIA H200 sm90``), from the driver; None without one."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        text = ctypes.create_string_buffer(256)
        if lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(device), device_id) != 0 \
                or lib.cuDeviceGetName(text, len(text), device) != 0:
            return None
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
        return f"{text.value.decode(errors='replace')} sm{major.value}{minor.value}"
    return None


def tensorrt_version() -> str | None:
    """The version of the TensorRT library onnxruntime would load (``10.13.0``); None when it is absent."""
    for name in _NVINFER:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = int(lib.getInferLibVersion())  # major * 10000 + minor * 100 + patch (TensorRT 10; 1000s before)
        major, rest = (v // 10000, v % 10000) if v >= 100000 else (v // 1000, v % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def engine_key(model_bytes: bytes, *, gpu: str, tensorrt: str, fp16: bool, max_batch: int) -> EngineKey:
    return EngineKey(model_sha256(model_bytes), gpu, tensorrt, ort.__version__, fp16, max_batch)


def engine_dir(cache_root: Path, key: EngineKey) -> Path:
    return cache_root / key.folder_name()


def engine_files(folder: Path) -> list[Path]:
    """The built engines in ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in ENGINE_SUFFIXES and p.stat().st_size > 0)
