"""`vigil run`'s pre-flight refuses an int8 model whose recorded agreement with fp32 is under
``inference.min_int8_agreement``, saying the figure and what to do; LocalPipeline refuses it before Redis or Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.quantize import QuantizeReport
from pipeline.core.config import VigilConfig, load_config
from pipeline.core.errors import ModelPrecisionError
from pipeline.ops.preflight import preflight
from pipeline.ops.runner import LocalPipeline
from tests.cli_helpers import vigil
from tests.fixtures.int8 import make_int8


@pytest.fixture(scope="module")
def low_agreement(tmp_path_factory: pytest.TempPathFactory, shared_model: Path, video_dir: Path) -> QuantizeReport:
    """A real int8 model whose real agreement is low: per-tensor weight scales, calibrated on the slideshow."""
    return make_int8(shared_model, tmp_path_factory.mktemp("int8") / "low-int8.onnx", video_dir, ("slideshow.mp4",),
                     per_channel=False)


def _config(tmp_path: Path, video_dir: Path, model: Path | str, inference: str = "") -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"streams:\n  - {{id: lobby, url: {video_dir / 'slideshow.mp4'}, loop: true}}\n"
                    f"inference:\n  model: {model}\n{inference}")
    return path


def test_vigil_run_refuses_an_int8_model_under_the_minimum(tmp_path: Path, video_dir: Path,
                                                           low_agreement: QuantizeReport) -> None:
    assert low_agreement.agreement < 0.9
    config = _config(tmp_path, video_dir, low_agreement.out, "  precision: int8\n")
    out = vigil("run", "--config", config, "--duration-s", "1", "--no-table")
    assert out.returncode == 2, out.stderr
    assert f"{config}: 1 problem(s)" in out.stderr
    assert (f"inference.precision: int8 model {low_agreement.out} agrees with its fp32 model on "
            f"{low_agreement.agreement:.4f} of held-out frames (top-1, the worst of its sources: slideshow.mp4 "
            f"{low_agreement.agreement:.3f} of 14; 14 frames in all), under inference.min_int8_agreement 0.99") \
        in out.stderr
    assert "Ray" not in out.stderr  # refused before anything started


def test_preflight_accepts_it_at_its_own_figure_and_says_how_to_make_one(
        tmp_path: Path, video_dir: Path, shared_model: Path, low_agreement: QuantizeReport) -> None:
    recorded = f"{low_agreement.agreement:.6f}"
    ok = load_config(_config(tmp_path, video_dir, low_agreement.out,
                             f"  precision: int8\n  min_int8_agreement: {recorded}\n"))
    assert preflight(ok, "site.yaml") == []
    fp32 = load_config(_config(tmp_path, video_dir, shared_model, "  precision: int8\n"))
    [problem] = preflight(fp32, "site.yaml")
    assert problem.startswith(f"inference.precision: inference.precision is int8, but {shared_model} is not an "
                              "int8 model")
    assert (f"make one with `vigil models quantize {shared_model} --config site.yaml --out "
            f"{shared_model.with_name(shared_model.stem + '-int8.onnx')}` and set inference.model to it") in problem
    as_fp32 = load_config(_config(tmp_path, video_dir, low_agreement.out))
    [problem] = preflight(as_fp32, "site.yaml")
    assert "is an int8 model, and inference.precision is fp32" in problem


def test_local_pipeline_refuses_it_before_redis_and_ray(tmp_path: Path, video_dir: Path,
                                                       low_agreement: QuantizeReport) -> None:
    cfg: VigilConfig = load_config(_config(tmp_path, video_dir, low_agreement.out, "  precision: int8\n"))
    pipeline = LocalPipeline(cfg)
    with pytest.raises(ModelPrecisionError, match=r"under inference\.min_int8_agreement 0\.99"):
        pipeline.__enter__()
    assert pipeline._redis is None and not pipeline._ray_started
