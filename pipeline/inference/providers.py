"""Choose onnxruntime execution providers: TensorRT/CUDA when a GPU is really usable, else CPU.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even on machines without a GPU or
driver, and then fails at session creation with a wall of errors. So we first ask the CUDA driver
itself (``libcuda``) whether a device exists; only then do we try the GPU providers, and we check
which provider the session really got. Either way the outcome is one log line.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from pipeline.core.config import GpuOptions
from pipeline.inference.engine_cache import engine_dir, engine_files, engine_key, gpu_identity, tensorrt_version

log = logging.getLogger(__name__)

ProviderSpec = tuple[str, dict[str, Any]]


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 when there is no driver or no device."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def usable_cpus() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (containers).

    ``os.cpu_count()`` reports the host's cores, so a pod limited to 2 CPUs on a 64-core node would
    otherwise start 64 inference threads and be throttled.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    return None


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask onnxruntime for, and why."""

    providers: list[ProviderSpec]
    reason: str
    requested: str = "auto"

    @property
    def wants_gpu(self) -> bool:
        return self.providers[0][0] != "CPUExecutionProvider"


def plan_providers(device: str, gpu: GpuOptions, *, batch_size: int, input_name: str,
                   input_shape_tail: str, engine_root: Path, model_bytes: bytes) -> ProviderPlan:
    """Decide which providers to request for ``device`` ("auto", "cpu" or "cuda"); TensorRT engines are cached
    under ``engine_root``, in a folder per model, GPU and TensorRT build (:mod:`pipeline.inference.engine_cache`)."""
    cpu: ProviderSpec = ("CPUExecutionProvider", {})
    if device == "cpu":
        return ProviderPlan([cpu], "device=cpu in config", device)
    available = set(ort.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        return ProviderPlan([cpu], "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)", device)
    n = cuda_device_count()
    if n == 0:
        return ProviderPlan([cpu], "no CUDA device found (no NVIDIA driver or no GPU)", device)
    if gpu.device_id >= n:
        return ProviderPlan([cpu], f"gpu.device_id={gpu.device_id} but only {n} CUDA device(s) exist", device)
    with contextlib.suppress(AttributeError, OSError, RuntimeError):
        # Loads CUDA/cuDNN from the nvidia-* pip wheels when present; harmless where absent.
        ort.preload_dlls()
    cuda_opts: dict[str, Any] = {
        "device_id": gpu.device_id,
        "prefer_nhwc": "1" if gpu.prefer_nhwc else "0",
        "enable_cuda_graph": "1" if gpu.cuda_graphs else "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
    }
    providers: list[ProviderSpec] = [("CUDAExecutionProvider", cuda_opts), cpu]
    if gpu.tensorrt and "TensorrtExecutionProvider" in available:
        folder = _engine_folder(gpu, batch_size, engine_root, model_bytes)
        providers.insert(0, ("TensorrtExecutionProvider",
                             tensorrt_options(gpu, folder, input_name, input_shape_tail, batch_size)))
    return ProviderPlan(providers, f"CUDA device {gpu.device_id} of {n}", device)


def tensorrt_options(gpu: GpuOptions, folder: Path, input_name: str, input_shape_tail: str,
                     batch_size: int) -> dict[str, Any]:
    """The TensorRT provider's options: fp16 as configured, the engine (and its timing cache) in ``folder``,
    one shape profile from 1 to ``batch_size`` frames, optimised for full batches."""
    shape = f"{input_name}:{{n}}x{input_shape_tail}"
    return {
        "device_id": gpu.device_id,
        "trt_fp16_enable": gpu.tensorrt_fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        "trt_profile_min_shapes": shape.format(n=1),
        "trt_profile_opt_shapes": shape.format(n=batch_size),
        "trt_profile_max_shapes": shape.format(n=batch_size),
    }


def _engine_folder(gpu: GpuOptions, batch_size: int, engine_root: Path, model_bytes: bytes) -> Path:
    """The engine's folder for this model, GPU and TensorRT; says in one line whether it was built ahead."""
    key = engine_key(model_bytes, gpu=gpu_identity(gpu.device_id) or f"cuda{gpu.device_id}",
                     tensorrt=tensorrt_version() or "unknown", fp16=gpu.tensorrt_fp16, max_batch=batch_size)
    folder = engine_dir(engine_root, key)
    if engine_files(folder):
        log.info("TensorRT engine for this model, GPU and TensorRT found in %s (built ahead)", folder)
    else:
        log.warning("no TensorRT engine cached in %s: TensorRT builds it on the first batch (minutes at batch %d); "
                    "`vigil models build-engine MODEL --batch-size %d` builds it ahead", folder, batch_size, batch_size)
    return folder


def create_session(model_bytes: bytes, plan: ProviderPlan, intra_op_threads: int) -> ort.InferenceSession:
    """Create the session for ``plan``; falls back to CPU with one log line if the GPU providers fail."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    # Provider load failures are reported by us in one line below, not by onnxruntime's logger; its
    # process-wide logger also prints a harmless "No registered plugin EP device" warning per GPU
    # session in onnxruntime 1.2x, hence severity 3 (errors) there too.
    opts.log_severity_level = 4 if plan.wants_gpu else 3
    if plan.wants_gpu:
        ort.set_default_logger_severity(3)
    names = [p[0] for p in plan.providers]
    session = ort.InferenceSession(model_bytes, sess_options=opts, providers=names,
                                   provider_options=[p[1] for p in plan.providers])
    got = session.get_providers()
    if plan.wants_gpu and got[0] == "CPUExecutionProvider":
        log.warning("inference on CPU: the CUDA provider could not start (CUDA/cuDNN libraries missing?) "
                    "although %s", plan.reason)
    elif names[0] == "TensorrtExecutionProvider" and got[0] != names[0]:
        log.warning("inference on %s (%s): TensorRT was requested but its libraries (libnvinfer) are not "
                    "installed", got[0], plan.reason)
    elif plan.wants_gpu:
        log.info("inference on %s (%s)", got[0], plan.reason)
    elif plan.requested == "cuda":
        log.warning("inference on CPU although device=cuda was asked for: %s", plan.reason)
    else:
        log.info("inference on CPU: %s", plan.reason)
    return session
