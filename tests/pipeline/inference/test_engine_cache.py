"""TensorRT engine caching and `vigil models build-engine`, as far as a machine without a GPU can check them:
the cache keys, the provider options, the clear refusal, and the fp32 top-1 comparison (fp16 on CPU)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from models.convert import convert_fp16
from pipeline.core.config import GpuOptions
from pipeline.core.preprocess import read_image_rgb
from pipeline.inference.engine_build import EngineBuildError, build_engine, tensorrt_problem, top1_agreement
from pipeline.inference.engine_cache import EngineKey, engine_dir, engine_files, engine_key
from pipeline.inference.providers import _engine_folder, cuda_device_count, tensorrt_options
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.cli_helpers import vigil

no_gpu = pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
KEY = EngineKey("ab" * 32, "NVIDIA H200 sm90", "10.13.0", "1.31.1", True, 512)


def test_each_thing_an_engine_depends_on_gets_a_folder_of_its_own() -> None:
    assert KEY.folder_name() == "abababababababab-nvidia-h200-sm90-trt10.13.0-ort1.31.1-fp16-b512"
    changed = [replace(KEY, model_sha256="cd" * 32), replace(KEY, gpu="NVIDIA L4 sm89"),
               replace(KEY, tensorrt="10.14.1"), replace(KEY, onnxruntime="1.32.0"), replace(KEY, fp16=False),
               replace(KEY, max_batch=256)]
    names = {k.folder_name() for k in [KEY, *changed]}
    assert len(names) == 7 and all("/" not in n and " " not in n for n in names)
    a, b = engine_key(b"model one", gpu="g", tensorrt="10", fp16=True, max_batch=8), \
        engine_key(b"model two", gpu="g", tensorrt="10", fp16=True, max_batch=8)
    assert a != b and a == engine_key(b"model one", gpu="g", tensorrt="10", fp16=True, max_batch=8)


def test_only_non_empty_engine_files_count_as_built(tmp_path: Path) -> None:
    folder = engine_dir(tmp_path, KEY)
    assert engine_files(folder) == []  # no folder yet
    folder.mkdir()
    (folder / "timing.cache").write_bytes(b"x")
    (folder / "half.engine").write_bytes(b"")  # a build that died midway
    assert engine_files(folder) == []
    (folder / "model_ctx.engine").write_bytes(b"engine")
    assert engine_files(folder) == [folder / "model_ctx.engine"]


def test_tensorrt_options_put_engine_and_timing_cache_in_the_keyed_folder(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.inference.providers")
    gpu = GpuOptions(tensorrt=True, tensorrt_fp16=False)
    folder = _engine_folder(gpu, 64, tmp_path, b"model bytes")
    assert folder.parent == tmp_path and folder.name.endswith("-fp32-b64")
    assert "builds it on the first batch" in caplog.text and "vigil models build-engine" in caplog.text
    folder.mkdir()
    (folder / "m.engine").write_bytes(b"engine")
    caplog.clear()
    assert _engine_folder(gpu, 64, tmp_path, b"model bytes") == folder
    assert "found in" in caplog.text and "built ahead" in caplog.text
    opts: dict[str, Any] = tensorrt_options(gpu, folder, "images", "224x224x3", 64)
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(folder)
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_max_shapes"]) == ("images:1x224x224x3",
                                                                                  "images:64x224x224x3")
    assert opts["trt_fp16_enable"] is False and opts["trt_engine_cache_enable"] is True


@no_gpu
def test_without_a_gpu_the_build_is_refused_with_what_is_missing(shared_model: Path, tmp_path: Path) -> None:
    assert "no CUDA device" in (tensorrt_problem(0) or "") or "no TensorRT provider" in (tensorrt_problem(0) or "")
    with pytest.raises(EngineBuildError) as err:
        build_engine(shared_model, batch_size=8, gpu=GpuOptions(), engine_root=tmp_path)
    assert str(shared_model) in str(err.value) and list(tmp_path.iterdir()) == []
    out = vigil("models", "build-engine", "--model", shared_model, "--batch-size", "8")
    assert out.returncode != 0 and "cannot build a TensorRT engine" in out.stderr, out.stderr


def test_fp16_keeps_the_fp32_top1_of_every_photograph(shared_model: Path, images_dir: Path, tmp_path: Path,
                                                      expected_images: dict[str, Any]) -> None:
    half = convert_fp16(shared_model, tmp_path / "half.onnx")
    photos = [(name, read_image_rgb(images_dir / name)) for name in sorted(expected_images)]
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", warmup=False)) as full, \
            ModelRuntime(half, RuntimeOptions(device="cpu", warmup=False)) as fp16:
        agreement = top1_agreement(full, fp16, photos)
    assert len(agreement) == len(expected_images) and all(a.same for a in agreement), agreement
    assert {a.image: a.reference for a in agreement} == {n: e["top1_label"] for n, e in expected_images.items()}
