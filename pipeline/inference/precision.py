"""Which models may be served at ``inference.precision``: the int8 gate of `vigil run` and every replica.

`vigil models quantize` (:mod:`models.quantize`) writes an int8 model with what it measured in the model's
``metadata_props`` (keys below); this module reads them back, so the check at serve time reads the recorded
figure, not a new measurement::

    precision                  int8
    int8_agreement             0.9875    top-1 agreement with fp32 on held-out frames, the worst frame source's
    int8_heldout_frames        160       held-out frames, all sources
    int8_sources               JSON: per source {"agreement", "frames", "fp32_jitter_agreement"}
    int8_fp32_sha256           sha256 of the fp32 model it was made from
    int8_fp32_model            that model's path when it was quantized
    int8_method                JSON: how it was quantized (format, calibration, per-channel, excluded nodes)

Rules (:func:`precision_problem`):

* ``precision: fp32`` serves any model but an int8 one (whose agreement would then never be checked);
* ``precision: int8`` serves an int8 model only, one with a recorded agreement of at least
  ``inference.min_int8_agreement``, and, when its fp32 model is still where it was, whose sha256 is still the
  recorded one (an fp32 model fine-tuned or replaced since makes the int8 copy stale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import InferenceConfig
from pipeline.core.errors import ModelPrecisionError
from pipeline.inference.contract import load_onnx
from pipeline.inference.model_store import sha256_file

PRECISION = "precision"
AGREEMENT = "int8_agreement"
HELDOUT_FRAMES = "int8_heldout_frames"
SOURCES = "int8_sources"
FP32_SHA256 = "int8_fp32_sha256"
FP32_MODEL = "int8_fp32_model"
METHOD = "int8_method"


@dataclass(frozen=True)
class Int8Record:
    """What `vigil models quantize` recorded in an int8 model."""

    agreement: float | None
    heldout_frames: int
    sources: dict[str, dict[str, Any]]
    fp32_sha256: str
    fp32_model: str

    @classmethod
    def read(cls, metadata: dict[str, str]) -> Int8Record | None:
        """The record of an int8 model's metadata; None when the model is not int8."""
        if metadata.get(PRECISION, "").lower() != "int8":
            return None
        try:
            agreement: float | None = float(metadata[AGREEMENT])
        except (KeyError, ValueError):
            agreement = None
        try:
            sources = json.loads(metadata.get(SOURCES, "{}"))
            frames = int(metadata.get(HELDOUT_FRAMES, "0"))
        except ValueError:  # json.JSONDecodeError is a ValueError: written by hand, or by another tool
            sources, frames = {}, 0
        return cls(agreement, frames, sources if isinstance(sources, dict) else {},
                   metadata.get(FP32_SHA256, ""), metadata.get(FP32_MODEL, ""))

    def describe_sources(self) -> str:
        parts = []
        for name, s in self.sources.items():
            if isinstance(s, dict) and "agreement" in s:
                parts.append(f"{Path(name).name} {float(s['agreement']):.3f} of {s.get('frames', '?')}")
        return "; ".join(parts)


def quantize_command(fp32_model: str, config: str | None) -> str:
    """The `vigil models quantize` command that makes (or remakes) the int8 copy of ``fp32_model``."""
    src = Path(fp32_model) if fp32_model else Path("MODEL.onnx")
    frames = f"--config {config}" if config else "--config CONFIG.yaml (or --frames FOLDER_OR_VIDEO)"
    return f"vigil models quantize {src} {frames} --out {src.with_name(src.stem + '-int8.onnx')}"


def precision_problem(path: Path, metadata: dict[str, str], inf: InferenceConfig,
                      config: str | None = None) -> str | None:
    """Why the model at ``path`` (with ``metadata``) may not be served under ``inf``; None when it may."""
    record = Int8Record.read(metadata)
    if inf.precision == "fp32":
        if record is None:
            return None
        return (f"{path} is an int8 model, and inference.precision is fp32: set inference.precision: int8 to serve "
                "it (its recorded agreement with fp32 is then checked), or point inference.model at the fp32 model")
    if record is None:
        return (f"inference.precision is int8, but {path} is not an int8 model (no precision=int8 in its "
                f"metadata): make one with `{quantize_command(str(path), config)}` and set inference.model to it")
    again = quantize_command(record.fp32_model, config)
    if record.agreement is None:
        return (f"int8 model {path} has no recorded agreement with fp32 (it was not made by `vigil models "
                f"quantize`): make it with `{again}`")
    if record.agreement < inf.min_int8_agreement:
        where = f": {record.describe_sources()}" if record.sources else ""
        return (f"int8 model {path} agrees with its fp32 model on {record.agreement:.4f} of held-out frames "
                f"(top-1, the worst of its sources{where}; {record.heldout_frames} frames in all), under "
                "inference.min_int8_agreement "
                f"{inf.min_int8_agreement:g}: serve fp32 (inference.precision: fp32), quantize again excluding "
                f"more layers (`{again} --exclude-first N` or --exclude NODE), or lower inference.min_int8_agreement "
                "if that agreement is enough for you")
    return _stale(path, record, again)


def _stale(path: Path, record: Int8Record, again: str) -> str | None:
    """The fp32 model is still where it was quantized from and has changed: the int8 copy is stale."""
    fp32 = Path(record.fp32_model) if record.fp32_model else None
    if fp32 is None or not record.fp32_sha256 or not fp32.is_file():
        return None  # moved to another machine, or deleted: the recorded sha256 stays for provenance
    now = sha256_file(fp32)
    if now == record.fp32_sha256:
        return None
    return (f"int8 model {path} was made from {fp32} with sha256 {record.fp32_sha256[:12]}…, which has changed "
            f"since (sha256 now {now[:12]}…): its agreement no longer holds; quantize again: `{again}`")


def check_served_model(path: Path | str, inf: InferenceConfig) -> None:
    """Raise :class:`ModelPrecisionError` if the model at ``path`` may not be served under ``inf``."""
    model = Path(path)
    metadata = {p.key: p.value for p in load_onnx(model).metadata_props}
    problem = precision_problem(model, metadata, inf)
    if problem is not None:
        raise ModelPrecisionError(problem)
