"""fp16 conversion keeps the contract and the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.convert import convert_fp16
from pipeline.core.preprocess import read_image_rgb, resize
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.cli_helpers import vigil


def test_fp16_keeps_top1_on_all_photographs(tmp_path: Path, shared_model: Path, shared_labels: Path,
                                            images_dir: Path, expected_images: dict[str, Any]) -> None:
    out = convert_fp16(shared_model, tmp_path / "m16.onnx")
    assert out.stat().st_size < shared_model.stat().st_size * 0.6
    frames = np.stack([resize(read_image_rgb(images_dir / n), 224, 224) for n in expected_images])
    opts = RuntimeOptions(device="cpu", labels=shared_labels)
    with ModelRuntime(out, opts) as rt16, ModelRuntime(shared_model, opts) as rt32:
        assert rt16.contract.dtype == "uint8"  # uint8 input kept
        assert rt16.contract.metadata["precision"] == "fp16"
        p16, p32 = rt16.probabilities(frames), rt32.probabilities(frames)
        labels16 = [f.top_k[0].name for f in rt16.classify(frames).frames()]
    assert p16.dtype == np.float32  # float32 output kept
    assert labels16 == [expected_images[n]["top1_label"] for n in expected_images]
    assert float(np.abs(p16 - p32).max()) < 0.02


def test_convert_cli(tmp_path: Path, shared_model: Path) -> None:
    out = vigil("models", "convert", shared_model, "--fp16", "--out", tmp_path / "x.onnx")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "x.onnx").is_file()
    out = vigil("models", "convert", shared_model, "--out", tmp_path / "y.onnx")
    assert out.returncode == 2 and "--fp16" in out.stderr
