"""Transfer learning: a new head on MobileNetV2's pooled features, from frames of the shared videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.finetune import FinetuneOptions, augment, backbone, feature_tensor, finetune, train_head
from pipeline.core.errors import ModelContractError
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.cli_helpers import vigil
from tests.models.lab_data import SEGMENT_CLASSES, video_dataset, video_frames
from tests.pipeline.inference.builders import not_an_image_model

CLASSES = ("bikes", "bird", "cat", "grace_hopper", "hotdog", "parrot")


def test_cut_point_is_the_pooled_1280_features(shared_model: Path) -> None:
    model = onnx.load(str(shared_model))
    assert feature_tensor(model) == "MobilenetV2/Logits/AvgPool_prequant"  # the input of the Logits 1x1 conv
    cut, _ = backbone(model)
    assert {n.op_type for n in cut.graph.node}.isdisjoint({"Softmax"})
    import onnxruntime as ort

    session = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": np.zeros((2, 224, 224, 3), np.uint8)})[0]
    assert out.shape == (2, 1280)


def test_finetune_on_video_frames_and_classify_with_the_runtime(tmp_path: Path, shared_model: Path,
                                                                video_dir: Path) -> None:
    data = video_dataset(video_dir, tmp_path / "data", per_class=15)
    result = finetune(shared_model, data, tmp_path / "gate.onnx",
                      FinetuneOptions(model_name="lab", model_version="v7", progress=False))
    print(f"fine-tune: {result.as_dict()}")
    assert result.classes == CLASSES
    assert result.feature_size == 1280
    assert result.val_images == 6 * 3 and result.train_images == 6 * 12
    assert result.train_features == result.train_images * 3  # clean + 2 augmented views
    assert result.head.val_accuracy >= 0.95 and result.exported_val_accuracy >= 0.95
    assert result.head.best_epoch <= result.head.epochs_run < 300  # early stopping
    # The exported model: same uint8 NHWC input contract, the new classes in its metadata.
    with ModelRuntime(result.model, RuntimeOptions(device="cpu", top_k=3)) as rt:
        c = rt.contract
        assert (c.input_name, c.dtype, c.layout, c.height, c.width) == ("images", "uint8", "NHWC", 224, 224)
        assert c.num_classes == 6 and c.background_class is None and c.output_kind == "probabilities"
        assert rt.class_names == list(CLASSES)
        assert (rt.name, rt.version) == ("lab", "v7")
        assert rt.scene_map is None
        # Frames the head never saw (the middle of each segment, ±1 frame off the dataset's samples).
        slides = video_frames(video_dir / "slideshow.mp4")
        bikes = video_frames(video_dir / "bikes.mp4")
        picks = [slides[50 * i + 26] for i in range(5)] + [bikes[101]]
        frames = np.stack([resize(bgr_to_rgb(f), 224, 224) for f in picks])
        got = [f.top_k[0].name for f in rt.classify(frames).frames()]
        probs = rt.probabilities(frames)
    assert got == [*SEGMENT_CLASSES, "bikes"]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(result.model)).metadata_props}
    assert meta["labels"].split("\n") == list(CLASSES)
    assert meta["feature_tensor"] == "MobilenetV2/Logits/AvgPool_prequant"
    assert len(meta["base_model_sha256"]) == 64


def test_train_head_stops_early_on_separable_features() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 32)).astype(np.float32)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), n)
        return (centres[y] + rng.normal(0, 1, (len(y), 32))).astype(np.float32), y.astype(np.int64)

    head = train_head(blobs(40), blobs(10), 3, FinetuneOptions(epochs=500, patience=10, learning_rate=0.05))
    assert head.val_accuracy == 1.0
    assert head.epochs_run < 500 and head.epochs_run - head.best_epoch == 10
    x, y = blobs(20)
    assert ((x @ head.weights + head.bias).argmax(axis=1) == y).mean() >= 0.95  # standardisation folded in


def test_augment_keeps_shape_and_changes_pixels() -> None:
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = augment(img, rng, (224, 224))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, resize(img, 224, 224))
    assert np.array_equal(augment(img, np.random.default_rng(0), (224, 224)), out)  # seeded


def _image_model_without_pooling(out: Path) -> Path:
    """A valid image classifier (uint8 NHWC in, 3 probabilities out) with no average pooling."""
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMax", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("Softmax", ["m"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "maxpool", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                               ["N", 224, 224, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(out))
    return out


def test_models_that_cannot_be_cut_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="no global/average pooling node"):
        finetune(_image_model_without_pooling(tmp_path / "p.onnx"), tmp_path, tmp_path / "o.onnx")
    with pytest.raises(ModelContractError, match="not an image tensor"):
        finetune(not_an_image_model(tmp_path / "f.onnx"), tmp_path, tmp_path / "o.onnx")


def test_finetune_cli(tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    data = video_dataset(video_dir, tmp_path / "data", per_class=5)
    out = vigil("models", "finetune", "--data", data, "--out", tmp_path / "m.onnx", "--model", shared_model,
                "--augment", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["classes"] == list(CLASSES) and doc["exported_val_accuracy"] >= 0.95
    out = vigil("models", "info", tmp_path / "m.onnx", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"]["num_classes"] == 6
