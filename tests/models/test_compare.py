"""`vigil models compare`: fp32 / fp16 / int8 (static, calibrated) of the shared model on a labelled set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest

from models.compare import ModelRow, plot
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.cli_helpers import vigil
from tests.models.lab_data import photo_dataset, slideshow_labels, video_frames


def _test_set(images_dir: Path, expected: dict[str, Any], video_dir: Path, root: Path) -> Path:
    """The ten photographs plus every second slideshow frame (125), each under its expected label."""
    photo_dataset(images_dir, expected, root)
    labels = slideshow_labels(video_dir)
    frames = video_frames(video_dir / "slideshow.mp4")
    per_segment = len(frames) // len(labels)
    for i in range(0, len(frames), 2):
        assert cv2.imwrite(str(root / labels[i // per_segment] / f"slide_{i:03d}.jpg"), frames[i])
    return root


@pytest.mark.alone
def test_compare_fp32_fp16_int8(tmp_path: Path, shared_model: Path, images_dir: Path,
                                expected_images: dict[str, Any], video_dir: Path) -> None:
    data = _test_set(images_dir, expected_images, video_dir, tmp_path / "test-set")
    out_dir = tmp_path / "cmp"
    out = vigil("models", "compare", shared_model, "--data", data, "--out", out_dir, "--bench-seconds", "0.3",
                "--calibration-images", "48")
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    for header in ("accuracy", "F1 (macro)", "size", "parameters", "latency b=1", "throughput"):
        assert header in out.stdout
    rows = {r["name"].rsplit("-", 1)[-1] if "-" in r["name"] else "fp32": r
            for r in json.loads((out_dir / "compare.json").read_text())}
    assert set(rows) == {"fp32", "fp16", "int8"}
    fp32, fp16, int8 = rows["fp32"], rows["fp16"], rows["int8"]
    assert fp32["accuracy"] == 1.0  # every photograph and frame has its expected label
    assert fp16["accuracy"] >= 0.99
    assert int8["accuracy"] >= fp32["accuracy"] - 0.02  # within 2 points
    assert int8["size_bytes"] < 0.30 * fp32["size_bytes"]
    assert fp16["size_bytes"] < 0.55 * fp32["size_bytes"]
    # Weights are counted, not quantisation scales and zero points: every copy has the same parameters.
    assert fp32["parameters"] == fp16["parameters"] == int8["parameters"] == 3_489_097
    assert all(r["latency_ms_b1"] > 0 and r["throughput"] > 0 and r["best_batch"] in (1, 8, 32)
               for r in rows.values())
    png = cv2.imread(str(out_dir / "compare.png"))
    assert png is not None and png.shape == (480, 720, 3)
    # The int8 copy keeps the contract (uint8 NHWC in, probabilities out) and carries its labels.
    int8_path = Path(int8["path"])
    meta = {p.key: p.value for p in onnx.load(str(int8_path)).metadata_props}
    assert meta["precision"] == "int8" and len(meta["labels"].split("\n")) == 1001
    with ModelRuntime(int8_path, RuntimeOptions(device="cpu")) as rt:
        assert rt.contract.dtype == "uint8" and rt.contract.num_classes == 1001
        assert {n.op_type for n in onnx.load(str(int8_path)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}


def test_plot_handles_one_model(tmp_path: Path) -> None:
    row = ModelRow("only", "x.onnx", 0.5, 0.5, 1, 1, 0.0, 0.0, 1)
    plot([row], tmp_path / "p.png")
    img = cv2.imread(str(tmp_path / "p.png"))
    assert img is not None and (img < 250).any()
    assert np.unique(img.reshape(-1, 3), axis=0).shape[0] > 2  # axes, text and a coloured point
