"""`vigil models quantize`: the shared model to int8 on frames of the shared videos, checked on held-out frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from models.frames import FrameSet, Sampling, from_path
from models.quantize import QuantizeReport, classifier_head, excluded_nodes, quantize, split_runs
from pipeline.core.errors import ImageError, ModelError, SourceError
from pipeline.inference.model_store import sha256_file
from pipeline.inference.precision import Int8Record
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.cli_helpers import vigil
from tests.fixtures.int8 import SMALL, make_int8, video_sources
from tests.fixtures.media import decode_all

CPU = RuntimeOptions(device="cpu", warmup=False)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, shared_model: Path, video_dir: Path) -> QuantizeReport:
    return make_int8(shared_model, tmp_path_factory.mktemp("int8") / "mobilenet-int8.onnx", video_dir)


def _top1(runtime: ModelRuntime, frames: np.ndarray) -> np.ndarray:
    return runtime.probabilities(frames).argmax(axis=1)


def test_int8_keeps_the_slideshow_top1_on_held_out_frames(quantized: QuantizeReport, shared_model: Path,
                                                          video_dir: Path) -> None:
    """The figures are what the two models give on the held-out runs, measured again here."""
    by_name = {Path(s.name).name: s for s in quantized.sources}
    assert set(by_name) == {"bikes.mp4", "slideshow.mp4"}
    with ModelRuntime(shared_model, CPU) as fp32, ModelRuntime(quantized.out, CPU) as int8:
        for source in video_sources(video_dir):
            cal, held = split_runs(len(source.frames), SMALL.holdout_fraction, SMALL.run_length)
            assert set(cal).isdisjoint(held) and len(cal) + len(held) == len(source.frames) == 50
            agreement = float(np.mean(_top1(fp32, source.frames[held]) == _top1(int8, source.frames[held])))
            row = by_name[Path(source.name).name]
            assert (row.agreement, row.heldout_frames, row.calibration_frames) == (agreement, len(held), len(cal))
    slides, bikes = by_name["slideshow.mp4"], by_name["bikes.mp4"]
    assert slides.agreement >= 0.99 and slides.fp32_jitter_agreement == 1.0
    # Street footage the model is unsure about (top-1 probability about 0.2): int8 keeps most top-1s, and
    # per-tensor weights (0 of them, test_precision) or a quantized softmax would not.
    assert bikes.agreement > 0.6
    assert quantized.agreement == min(slides.agreement, bikes.agreement)
    assert quantized.heldout_frames == 28 and quantized.calibration_frames == SMALL.calibration_frames


def test_the_int8_model_records_what_was_measured(quantized: QuantizeReport, shared_model: Path) -> None:
    model = onnx.load(quantized.out)
    meta = {p.key: p.value for p in model.metadata_props}
    record = Int8Record.read(meta)
    assert record is not None and record.agreement == pytest.approx(quantized.agreement, abs=1e-6)
    assert record.heldout_frames == 28
    assert record.fp32_sha256 == sha256_file(shared_model) and record.fp32_model == str(shared_model.resolve())
    assert {Path(k).name: v["frames"] for k, v in record.sources.items()} == {"bikes.mp4": 14, "slideshow.mp4": 14}
    method = json.loads(meta["int8_method"])
    assert method["format"] == "QDQ" and method["weights"] == "int8 per-channel" and method["calibration"] == "minmax"
    assert method["calibration_frames"] == 32 and method["float_nodes"] == 2 and method["float_logits"]
    assert len(meta["labels"].split("\n")) == 1001 and meta["model_version"].endswith("int8")
    # int8 weights and activations; the classifier head's outputs float (logits and probabilities without
    # steps to tie), its weights int8 like the others (the file is a quarter of fp32's)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    producer = {o: n for n in model.graph.node for o in n.output}
    softmax = producer["probabilities"]
    reshape = producer[softmax.input[0]]
    logits = producer[reshape.input[0]]
    assert [softmax.op_type, reshape.op_type, logits.op_type] == ["Softmax", "Reshape", "Conv"]
    assert producer[logits.input[1]].op_type == "DequantizeLinear"
    assert Path(quantized.out).stat().st_size < 0.3 * shared_model.stat().st_size
    with ModelRuntime(quantized.out, CPU) as rt:
        assert rt.contract.dtype == "uint8" and rt.contract.num_classes == 1001


def test_held_out_runs_are_spread_over_each_source() -> None:
    cal, held = split_runs(100, 0.3, 10)
    assert list(held) == [*range(30, 40), *range(60, 70), *range(90, 100)]
    assert sorted([*cal, *held]) == list(range(100))
    cal, held = split_runs(6, 0.3, 10)  # shorter than the runs: runs of a quarter of it
    assert len(held) > 0 and len(cal) > 0
    with pytest.raises(ModelError, match="between 0 and 1"):
        split_runs(10, 1.0, 2)


def test_excluded_nodes_by_name_op_type_and_position(shared_model: Path) -> None:
    model = onnx.load(shared_model)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    head = excluded_nodes(model, (), 0)  # always: the classifier head after its last Conv (whose output is made
    assert [model.graph.node[[n.name for n in model.graph.node].index(x)].op_type for x in head] == \
        ["Reshape", "Softmax"]  # float after quantization, test above)
    assert classifier_head(model) == [*reversed(head), convs[-1]]
    assert len(excluded_nodes(model, ("Add",), 0)) == 2 + 10
    assert set(excluded_nodes(model, (convs[5],), 2)) == {convs[5], convs[0], convs[1], *head}
    with pytest.raises(ModelError, match=r"--exclude Nope: no node or op type.*Conv"):
        excluded_nodes(model, ("Nope",), 0)


def test_too_few_frames_or_sources_are_refused(tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    few = video_sources(video_dir, ("slideshow.mp4",), every=50)  # 5 frames
    with pytest.raises(ModelError, match=r"only \d held-out frame"):
        quantize(shared_model, tmp_path / "x.onnx", few, SMALL)
    one = FrameSet("one", few[0].frames[:1])
    with pytest.raises(ModelError, match="too few frames to both calibrate and check: one"):
        quantize(shared_model, tmp_path / "x.onnx", [one], SMALL)
    with pytest.raises(ModelError, match="--frames"):
        quantize(shared_model, tmp_path / "x.onnx", [], SMALL)


def test_frame_sources_name_what_is_wrong(tmp_path: Path, images_dir: Path) -> None:
    photos = from_path(images_dir, Sampling((224, 224), max_frames=4, every=2))
    assert photos.frames.shape == (4, 224, 224, 3) and photos.frames.dtype == np.uint8
    with pytest.raises(ImageError, match="is one image; give the folder"):
        from_path(next(images_dir.glob("*.png")), Sampling((224, 224)))
    with pytest.raises(SourceError, match="neither an image folder nor a video file"):
        from_path(tmp_path / "missing.mp4", Sampling((224, 224)))
    with pytest.raises(ImageError, match="has no images"):
        from_path(tmp_path, Sampling((224, 224)))


def test_cli_quantizes_on_a_capture_folder_and_a_configured_camera(tmp_path: Path, shared_model: Path,
                                                                    video_dir: Path) -> None:
    captured = tmp_path / "frames"  # what `vigil capture` writes: full-size JPEGs named by stream and time
    captured.mkdir()
    for i, bgr in enumerate(decode_all(video_dir / "bikes.mp4")):
        assert cv2.imwrite(str(captured / f"street_20261208T101500.{i:03d}Z_{i:05d}.jpg"), bgr)
    config = tmp_path / "site.yaml"
    config.write_text(f"streams:\n  - id: lobby\n    url: {video_dir / 'slideshow.mp4'}\n    fps: 5\n"
                      "inference:\n  batch_size: 4\n")
    out = tmp_path / "int8.onnx"
    run = vigil("models", "quantize", shared_model, "--frames", captured, "--config", config, "--out", out,
                "--every", "5", "--run-length", "2", "--calibration-frames", "30", "--bench-seconds", "0.1")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["source", "calibration", "held", "out", "int8", "=", "fp32", "fp32", "+-1", "grey"]
    assert lines[1].split()[0].endswith("frames") and lines[2].split()[:3] == ["lobby", "36", "14"]
    assert lines[2].split()[3] == "1.000"  # the slideshow's top-1s, through the camera path
    assert lines[3].startswith("agreement ") and "calibrated on 24 frames" in lines[3]
    assert lines[4].startswith("batch 1 (") and "images/s" in lines[4] and lines[5].startswith("batch 4 (")
    assert f"int8 model: {out}" in lines
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert set(json.loads(meta["int8_sources"])) == {str(captured), "lobby"}
