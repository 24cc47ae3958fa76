"""The int8 gate at serve time: a replica (and `vigil run`, tests/pipeline/ops/test_preflight.py) serves an int8
model only at ``inference.precision: int8`` and only with a recorded agreement of at least the minimum."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import onnx
import pytest

from models.quantize import QuantizeReport, write_record
from pipeline.core.config import InferenceConfig, VigilConfig
from pipeline.core.errors import ModelPrecisionError
from pipeline.inference.contract import set_metadata
from pipeline.inference.precision import AGREEMENT, Int8Record, check_served_model
from pipeline.inference.serving import ClassifierReplica, ServeSettings
from tests.fixtures.int8 import make_int8

INT8 = InferenceConfig(precision="int8")


@pytest.fixture(scope="module")
def per_tensor(tmp_path_factory: pytest.TempPathFactory, shared_model: Path, video_dir: Path) -> QuantizeReport:
    """A real int8 model with a real, low agreement: per-tensor weight scales lose this model's top-1s."""
    return make_int8(shared_model, tmp_path_factory.mktemp("int8") / "per-tensor-int8.onnx", video_dir,
                     per_channel=False)


def _recorded(path: Path | str) -> float:
    record = Int8Record.read({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    assert record is not None and record.agreement is not None
    return record.agreement


def test_an_int8_model_under_the_minimum_is_refused_with_its_figure(per_tensor: QuantizeReport) -> None:
    recorded = _recorded(per_tensor.out)
    assert recorded == pytest.approx(per_tensor.agreement, abs=1e-6) and recorded < 0.5
    with pytest.raises(ModelPrecisionError) as err:
        check_served_model(per_tensor.out, INT8)
    text = str(err.value)
    assert f"agrees with its fp32 model on {recorded:.4f} of held-out frames" in text
    assert "(top-1, the worst of its sources: bikes.mp4 " in text and "slideshow.mp4 " in text
    assert "of 14; 28 frames in all)" in text
    assert "under inference.min_int8_agreement 0.99" in text
    assert "serve fp32 (inference.precision: fp32)" in text and "vigil models quantize" in text
    # The recorded figure is what is checked: at a minimum equal to it, the model is served.
    check_served_model(per_tensor.out, InferenceConfig(precision="int8", min_int8_agreement=recorded))


def test_precision_and_model_must_match(per_tensor: QuantizeReport, shared_model: Path) -> None:
    with pytest.raises(ModelPrecisionError, match=r"is an int8 model, and inference.precision is fp32: set "
                                                  r"inference.precision: int8"):
        check_served_model(per_tensor.out, InferenceConfig())
    with pytest.raises(ModelPrecisionError) as err:
        check_served_model(shared_model, INT8)
    int8 = shared_model.with_name(f"{shared_model.stem}-int8.onnx")
    assert (f"inference.precision is int8, but {shared_model} is not an int8 model (no precision=int8 in its "
            f"metadata): make one with `vigil models quantize {shared_model} --config CONFIG.yaml (or --frames "
            f"FOLDER_OR_VIDEO) --out {int8}` and set inference.model to it") == str(err.value)
    check_served_model(shared_model, InferenceConfig())


def test_an_int8_model_without_a_record_is_refused(tmp_path: Path, per_tensor: QuantizeReport) -> None:
    model = onnx.load(per_tensor.out)
    kept = [p for p in model.metadata_props if p.key != AGREEMENT]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    bare = tmp_path / "bare-int8.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelPrecisionError, match="has no recorded agreement with fp32"):
        check_served_model(bare, InferenceConfig(precision="int8", min_int8_agreement=0.0))


def test_an_int8_model_of_an_fp32_model_changed_since_is_refused(tmp_path: Path, per_tensor: QuantizeReport,
                                                                 shared_model: Path) -> None:
    fp32, int8 = tmp_path / "mine.onnx", tmp_path / "mine-int8.onnx"
    shutil.copy(shared_model, fp32)
    shutil.copy(per_tensor.out, int8)
    write_record(int8, {"int8_fp32_model": str(fp32)})  # as if quantized from this copy
    lenient = InferenceConfig(precision="int8", min_int8_agreement=0.0)
    check_served_model(int8, lenient)  # same bytes: served
    changed = onnx.load(str(fp32))
    set_metadata(changed, {"model_version": "fine-tuned"})
    onnx.save(changed, str(fp32))
    with pytest.raises(ModelPrecisionError, match=r"was made from .*mine.onnx with sha256 1ed676fb96ef…, which has "
                                                  r"changed since .*quantize again: `vigil models quantize"):
        check_served_model(int8, lenient)
    fp32.unlink()  # gone (another machine): the recorded sha256 stays for provenance, nothing to compare
    check_served_model(int8, lenient)


def test_a_replica_refuses_it_before_it_loads_the_model(per_tensor: QuantizeReport) -> None:
    cfg = VigilConfig.model_validate({"inference": {"precision": "int8"}, "redis": {"urls": ["redis://127.0.0.1:1"]}})
    settings = ServeSettings.from_config(cfg, Path(per_tensor.out))
    with pytest.raises(ModelPrecisionError, match=r"under inference\.min_int8_agreement 0\.99"):
        ClassifierReplica(asdict(settings))
