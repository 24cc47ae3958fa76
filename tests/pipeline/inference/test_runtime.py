"""The model runtime on the real shared MobileNetV2 and a torchvision-style variant of it."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.errors import InputError, LabelsError, ModelContractError, ModelLoadError, SceneMapError
from pipeline.core.preprocess import read_image_rgb, resize
from pipeline.inference.providers import cuda_device_count, usable_cpus
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions, top_k
from tests.pipeline.inference.builders import labels_without_background, not_an_image_model, torchvision_style


def load_frames(images_dir: Path, expected: dict[str, Any]) -> np.ndarray:
    return np.stack([resize(read_image_rgb(images_dir / name), 224, 224) for name in expected])


@pytest.fixture(scope="module")
def runtime(shared_model: Path) -> Any:
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=8)) as rt:
        yield rt


def test_shared_model_top1_on_all_photographs(runtime: ModelRuntime, images_dir: Path,
                                              expected_images: dict[str, Any]) -> None:
    result = runtime.classify(load_frames(images_dir, expected_images))
    assert len(result) == 10
    for name, frame in zip(expected_images, result.frames(), strict=True):
        assert frame.top_k[0].name == expected_images[name]["top1_label"], name
        assert frame.top_k[0].index == expected_images[name]["top1_index"], name
        assert len(frame.top_k) == 5
        assert frame.top_k[0].score >= frame.top_k[1].score
        assert frame.scene is not None and 0.0 < frame.scene.score <= 1.0 + 1e-5


def test_contract_read_from_graph_and_metadata(runtime: ModelRuntime) -> None:
    c = runtime.contract
    assert (c.input_name, c.layout, c.dtype, c.height, c.width) == ("images", "NHWC", "uint8", 224, 224)
    assert (c.num_classes, c.background_class, c.output_kind, c.dynamic_batch) == (1001, 0, "probabilities", True)
    assert c.mean is None  # normalisation lives inside the graph
    assert runtime.provider == "CPUExecutionProvider"
    assert runtime.sha256 == "1ed676fb96efa6a4aaafc505a854e7e288462367feee9dcdb9b2fac6296a3b81"


def test_scene_categories(runtime: ModelRuntime, images_dir: Path, expected_images: dict[str, Any]) -> None:
    frames = runtime.classify(load_frames(images_dir, expected_images)).frames()
    scenes = {name: f.scene.name for name, f in zip(expected_images, frames, strict=True) if f.scene}
    assert scenes["cat.png"] == "animals"
    assert scenes["bird.png"] == "animals"
    assert scenes["hot_dog.png"] == "food"
    assert scenes["grace_hopper.png"] == "people"


def test_batching_is_consistent(runtime: ModelRuntime, images_dir: Path, expected_images: dict[str, Any]) -> None:
    frames = load_frames(images_dir, expected_images)  # 10 frames, batch_size 8: two chunks
    together = runtime.probabilities(frames)
    alone = np.concatenate([runtime.probabilities(frames[i:i + 1]) for i in range(len(frames))])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert runtime.probabilities(frames[:0]).shape == (0, 1001)


def test_any_size_input_is_resized(runtime: ModelRuntime, images_dir: Path) -> None:
    cat = read_image_rgb(images_dir / "cat.png")
    big = np.stack([cat, cat])
    assert runtime.classify(big).frame(0).top_k[0].name == "Egyptian cat"


def test_torchvision_style_model_same_labels(tmp_path: Path, shared_model: Path, shared_labels: Path,
                                             images_dir: Path, expected_images: dict[str, Any]) -> None:
    model = torchvision_style(shared_model, tmp_path / "tv.onnx")
    labels = labels_without_background(shared_labels, tmp_path / "tv.labels.txt")
    with ModelRuntime(model, RuntimeOptions(device="cpu")) as rt:  # labels found beside the model
        c = rt.contract
        assert (c.layout, c.dtype, c.output_kind, c.num_classes, c.background_class) == \
            ("NCHW", "float32", "logits", 1000, None)
        assert c.mean == pytest.approx((0.485, 0.456, 0.406))
        result = rt.classify(load_frames(images_dir, expected_images))
        probs = rt.probabilities(load_frames(images_dir, expected_images))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # softmax applied to logits
    assert rt.class_names[0] == labels.read_text().splitlines()[0]
    for name, frame in zip(expected_images, result.frames(), strict=True):
        assert frame.top_k[0].name == expected_images[name]["top1_label"], name
        assert frame.top_k[0].index == expected_images[name]["top1_index"] - 1, name
        assert frame.scene is not None  # the built-in map applies to 1000-class models too


def test_wrong_normalisation_would_be_caught(tmp_path: Path, shared_model: Path, images_dir: Path,
                                             expected_images: dict[str, Any]) -> None:
    """Guard for the test above: feeding the torchvision model unnormalised pixels breaks the labels."""
    import onnxruntime as ort

    model = torchvision_style(shared_model, tmp_path / "tv.onnx")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = load_frames(images_dir, expected_images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    logits = sess.run(None, {"input": x})[0]
    right = sum(int(np.argmax(row)) == expected_images[n]["top1_index"] - 1
                for n, row in zip(expected_images, logits, strict=True))
    assert right < 8


def test_top_k_orders_and_limits() -> None:
    probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
    ids, scores = top_k(probs, 2)
    assert ids.tolist()[0][0] == 1 and ids.tolist()[1][0] == 0
    assert scores.shape == (2, 2) and scores[0][0] == pytest.approx(0.5)
    assert top_k(probs, 10)[0].shape == (2, 4)


def test_bad_frames_are_rejected(runtime: ModelRuntime) -> None:
    with pytest.raises(InputError, match=r"uint8 RGB frames shaped \[N, H, W, 3\]; got float32"):
        runtime.classify(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(InputError, match="got uint8 \\(224, 224, 3\\)"):
        runtime.classify(np.zeros((224, 224, 3), np.uint8))


def test_missing_and_corrupt_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist; pass --model PATH"):
        ModelRuntime(tmp_path / "missing.onnx").open()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="is not a valid ONNX model"):
        ModelRuntime(corrupt).open()


def test_truncated_model(tmp_path: Path, shared_model: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(shared_model.read_bytes()[: 1_000_000])
    with pytest.raises(ModelLoadError, match="is not a valid ONNX model"):
        ModelRuntime(cut).open()


def test_model_without_image_input(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="input 'features' is not an image tensor"):
        ModelRuntime(not_an_image_model(tmp_path / "features.onnx")).open()


def test_labels_with_wrong_count(tmp_path: Path, shared_model: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))
    with pytest.raises(LabelsError, match="has 10 class names but the model has 1001 classes"):
        ModelRuntime(shared_model, RuntimeOptions(labels=labels, device="cpu")).open()


def test_custom_scene_map(tmp_path: Path, shared_model: Path, images_dir: Path,
                          expected_images: dict[str, Any]) -> None:
    scene = tmp_path / "scene.yaml"
    scene.write_text("default: elsewhere\ncategories:\n  felines: ['281-285']\n  birds: [chickadee, 88-100]\n")
    with ModelRuntime(shared_model, RuntimeOptions(scene_map=scene, device="cpu")) as rt:
        frames = rt.classify(load_frames(images_dir, expected_images)).frames()
    by_name = {n: f.scene.name for n, f in zip(expected_images, frames, strict=True) if f.scene}
    assert by_name["cat.png"] == "felines"
    assert by_name["bird.png"] == "birds" and by_name["parrot.png"] == "birds"
    assert by_name["hot_dog.png"] == "elsewhere"


def test_bad_scene_map(tmp_path: Path, shared_model: Path) -> None:
    scene = tmp_path / "scene.yaml"
    scene.write_text("categories:\n  a: [1, 2]\n  b: [2]\n")
    with pytest.raises(SceneMapError, match="listed in two categories"):
        ModelRuntime(shared_model, RuntimeOptions(scene_map=scene, device="cpu")).open()
    scene.write_text("categories:\n  a: [5000]\n")
    with pytest.raises(SceneMapError, match="outside this model's 1000 classes"):
        ModelRuntime(shared_model, RuntimeOptions(scene_map=scene, device="cpu")).open()


def test_auto_device_falls_back_to_cpu_with_one_log_line(shared_model: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    with ModelRuntime(shared_model, RuntimeOptions(device="auto", warmup=False)) as rt:
        # auto means the GPU exactly when the driver reports one, and the CPU otherwise (CI: no GPU).
        assert rt.provider == ("CUDAExecutionProvider" if cuda_device_count() else "CPUExecutionProvider")
    provider_lines = [r for r in caplog.records if r.name == "pipeline.inference.providers"]
    assert len(provider_lines) == 1
    assert provider_lines[0].levelno <= logging.WARNING
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_closed_runtime(shared_model: Path) -> None:
    rt = ModelRuntime(shared_model, RuntimeOptions(device="cpu", warmup=False))
    with pytest.raises(Exception, match="not open"):
        _ = rt.contract


def test_dedicated_scene_model(tmp_path: Path, shared_model: Path, shared_labels: Path, images_dir: Path,
                               expected_images: dict[str, Any]) -> None:
    """A second ONNX classifier can supply the scene; here one whose classes are ImageNet's."""
    scene_model = torchvision_style(shared_model, tmp_path / "scene.onnx")
    labels_without_background(shared_labels, tmp_path / "scene.labels.txt")
    opts = RuntimeOptions(device="cpu", scene_model=scene_model)
    with ModelRuntime(shared_model, opts) as rt:
        assert rt.scene_map is None
        frames = rt.classify(load_frames(images_dir, expected_images)).frames()
    for name, frame in zip(expected_images, frames, strict=True):
        assert frame.scene is not None
        assert frame.scene.name == expected_images[name]["top1_label"]


def test_cpu_runs_one_single_threaded_lane_per_core(shared_model: Path) -> None:
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", warmup=False)) as rt:
        assert rt.lanes == usable_cpus()
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", warmup=False, cpu_share=64)) as rt:
        assert rt.lanes == 1  # 64 replicas sharing the cores: one lane each at most
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", warmup=False, lanes=3)) as rt:
        assert rt.lanes == 3


def test_concurrent_classify_calls_match_sequential(shared_model: Path, images_dir: Path,
                                                    expected_images: dict[str, Any]) -> None:
    frames = load_frames(images_dir, expected_images)
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=4, lanes=3)) as rt:
        expected = rt.probabilities(frames)
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda _: rt.probabilities(frames), range(6)))
    for probs in got:
        np.testing.assert_allclose(probs, expected, atol=1e-5)
