"""Model conversions: fp16 weights with the uint8 (or float32) input and float32 output kept."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from pipeline.core.errors import ModelError
from pipeline.inference.contract import load_onnx, read_contract, set_metadata

log = logging.getLogger(__name__)


def convert_fp16(src: Path, dst: Path) -> Path:
    """Write an fp16 copy of ``src`` to ``dst``.

    Inputs and outputs keep their types (``keep_io_types``), so callers still send uint8 frames
    and read float32 probabilities; only weights and activations inside the graph become fp16,
    halving the file and the GPU's memory traffic.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(src)
    contract = read_contract(model, str(src))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter raises bare ValueError/RuntimeError on unsupported graphs
        raise ModelError(f"cannot convert {src} to fp16: {exc}") from exc
    set_metadata(converted, {"precision": "fp16",
                             "model_version": (contract.version or "") + "-fp16" if contract.version else "fp16"})
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(dst))
    log.info("wrote %s (%.1f MB, was %.1f MB)", dst, dst.stat().st_size / 1e6, src.stat().st_size / 1e6)
    return dst
