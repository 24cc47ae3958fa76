"""The operator's classifiers beside the serving model: grafted heads and tails, models of their own, checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.graph import feature_tensor, with_head
from models.head import Head
from pipeline.core.config import ClassifierConfig, validate_config
from pipeline.core.errors import ConfigError, ModelContractError
from pipeline.core.preprocess import read_image_rgb, resize
from pipeline.inference.contract import set_metadata
from pipeline.inference.graft import own_part
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.ops.preflight import preflight


def head_model(base: onnx.ModelProto, classes: tuple[str, ...], seed: int, base_sha256: str) -> onnx.ModelProto:
    """A head on the serving model's features, as `vigil models finetune` writes one (weights at random)."""
    rng = np.random.default_rng(seed)
    head = Head(rng.normal(0, 0.05, (1280, len(classes))).astype(np.float32), np.zeros(len(classes), np.float32),
                0, 0, 0.0, 0.0)
    return with_head(base, head, classes, {"model_name": f"head-{seed}", "base_model_sha256": base_sha256})


def retrained_tail(base: onnx.ModelProto, classes: tuple[str, ...], base_sha256: str) -> onnx.ModelProto:
    """A head whose last convolution before the pooling was retrained too (`--unfreeze`: same names, new weights)."""
    clf = head_model(base, classes, 7, base_sha256)
    pooled = feature_tensor(clf)
    producer = {o: n for n in clf.graph.node for o in n.output}
    node = producer[producer[pooled].input[0]]
    while node.op_type != "Conv":
        node = producer[node.input[0]]
    weights = next(t for t in clf.graph.initializer if t.name == node.input[1])
    changed = numpy_helper.to_array(weights) * np.float32(1.05)
    weights.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), weights.name))
    return clf


def brightness_model(classes: tuple[str, ...]) -> onnx.ModelProto:
    """A classifier of its own (nothing of the serving model): mean brightness -> dark / bright."""
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("Gemm", ["m", "w", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array([[-0.1, 0.1]] * 3, np.float32), "w"),
             numpy_helper.from_array(np.array([12.0, -12.0], np.float32), "b")]
    graph = helper.make_graph(nodes, "brightness", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                                  ["N", 224, 224, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    set_metadata(model, {"labels": "\n".join(classes), "output_kind": "probabilities", "num_classes": 2})
    return model


@pytest.fixture(scope="module")
def made(shared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("classifiers")
    base = onnx.load(str(shared_model))
    sha = hashlib.sha256(shared_model.read_bytes()).hexdigest()
    models = {"gate": head_model(base, ("closed", "open"), 1, sha),
              "bay": head_model(base, ("empty", "full", "van"), 2, sha),
              "tail": retrained_tail(base, ("no", "yes"), sha), "light": brightness_model(("dark", "bright")),
              "alien": head_model(base, ("a", "b"), 3, "0" * 64)}
    paths = {}
    for name, model in models.items():
        paths[name] = d / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    return {"base": base, "models": models, "paths": paths, "dir": d}


def photos(images_dir: Path, expected: dict[str, Any], n: int = 6) -> np.ndarray:
    names = sorted(expected)[:n]
    return np.stack([resize(read_image_rgb(images_dir / name), 224, 224) for name in names])


def alone(model: onnx.ModelProto, frames: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": frames})[0])


def test_heads_and_tails_answer_in_the_serving_models_run(made: dict[str, Any], shared_model: Path,
                                                          images_dir: Path, expected_images: dict[str, Any]) -> None:
    cfgs = (ClassifierConfig(id="gate", model=str(made["paths"]["gate"]), classes=["closed", "open"]),
            ClassifierConfig(id="bay", model=str(made["paths"]["bay"]), classes=["empty", "full", "van"],
                             cameras=["lot"]),
            ClassifierConfig(id="tail", model=str(made["paths"]["tail"]), classes=["no", "yes"], zones=["door"]))
    assert own_part(made["base"], made["models"]["tail"]).cut != own_part(made["base"], made["models"]["gate"]).cut
    frames = photos(images_dir, expected_images)
    where = [("lot", "full"), ("lot", "door"), ("road", "full"), ("road", "door"), ("lot", "full"), ("road", "x")]
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=4)) as plain, \
            ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=4, classifiers=cfgs)) as rt:
        assert rt.classifiers.extra_outputs == ["vigil_c_gate/probabilities", "vigil_c_bay/probabilities",
                                                "vigil_c_tail/probabilities"]
        result, reference = rt.classify(frames, where), plain.classify(frames)
    np.testing.assert_array_equal(result.class_ids, reference.class_ids)  # ImageNet's answers are today's
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-5)
    for cid in ("gate", "bay", "tail"):
        probs = alone(made["models"][cid], frames)
        answers = result.classifiers[cid]
        ran = [cfg.runs_on(cam, zone) for cfg in cfgs if cfg.id == cid for cam, zone in where]
        np.testing.assert_array_equal(answers.class_ids, np.where(ran, probs.argmax(1), -1))
        np.testing.assert_allclose(answers.scores[ran], probs.max(1)[ran], rtol=1e-5)
    frame = result.frame(1)  # lot/door: every classifier
    assert set(frame.classifiers) == {"gate", "bay", "tail"}
    assert frame.classifiers["bay"].name in ("empty", "full", "van")
    assert set(result.frame(2).classifiers) == {"gate"}  # road/full: neither bay (lot only) nor tail (door only)
    assert set(frame.as_dict()["classifiers"]["gate"]) == {"index", "label", "score"}


def test_a_model_of_its_own_runs_only_on_its_crops(made: dict[str, Any], shared_model: Path) -> None:
    cfg = ClassifierConfig(id="light", model=str(made["paths"]["light"]), classes=["dark", "bright"], zones=["sky"])
    frames = np.stack([np.full((224, 224, 3), v, np.uint8) for v in (10, 250, 240, 5)])
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=4, classifiers=(cfg,))) as rt:
        assert rt.classifiers.extra_outputs == []  # nothing grafted: it shares nothing with the serving model
        answers = rt.classify(frames, [("c", "sky"), ("c", "sky"), ("c", "full"), ("d", "sky")]).classifiers["light"]
    assert [answers.at(i).name if answers.at(i) else None for i in range(4)] == ["dark", "bright", None, "dark"]


def test_classes_and_backbone_are_checked_at_load_and_in_preflight(made: dict[str, Any], shared_model: Path) -> None:
    wrong = ClassifierConfig(id="gate", model=str(made["paths"]["gate"]), classes=["open", "closed"])
    with pytest.raises(ModelContractError, match=r"classifiers\[0\] \(gate\).*classes are \['closed', 'open'\]"):
        ModelRuntime(shared_model, RuntimeOptions(device="cpu", classifiers=(wrong,))).open()
    alien = ClassifierConfig(id="alien", model=str(made["paths"]["alien"]), classes=["a", "b"])
    with pytest.raises(ModelContractError, match=r"trained on another serving model.*vigil models finetune"):
        ModelRuntime(shared_model, RuntimeOptions(device="cpu", classifiers=(alien,))).open()
    cfg = validate_config({
        "inference": {"model": str(shared_model)},
        "streams": [{"id": "cam", "url": "rtsp://127.0.0.1:1/x", "zones": [{"id": "gate", "xyxy": [0, 0, 0.5, 0.5]}]}],
        "classifiers": [{"id": "gate", "model": str(made["paths"]["gate"]), "classes": ["open", "closed"],
                         "zones": ["gate"]},
                        {"id": "alien", "model": str(made["paths"]["alien"]), "classes": ["a", "b"]},
                        {"id": "gone", "model": str(made["dir"] / "nope.onnx"), "classes": ["a", "b"]}]}, environ={})
    problems = preflight(cfg)
    assert any(p.startswith("classifiers[0] (gate)") and "write the model's classes" in p for p in problems)
    assert any(p.startswith("classifiers[1] (alien)") and "another serving model" in p for p in problems)
    assert any(p.startswith("classifiers[2].model (gone): no model file") for p in problems)


@pytest.mark.parametrize(("classifiers", "message"), [
    ([{"id": "g", "model": "g.onnx", "classes": ["a", "b"], "cameras": ["nope"]}],
     r"classifiers\[0\]\.cameras: no camera 'nope'"),
    ([{"id": "g", "model": "g.onnx", "classes": ["a", "b"], "cameras": ["cam"], "zones": ["door"]}],
     r"camera\(s\) cam have no zone 'door'"),
    ([{"id": "g", "model": "g.onnx", "classes": ["a", "b"], "zones": ["door"]}], "no camera has a zone 'door'"),
    ([{"id": "g", "model": "g.onnx", "classes": ["a", "b"]}] * 2, "classifier id 'g' is used twice"),
    ([{"id": "g", "model": "g.onnx", "classes": ["a", "a"]}], "classes repeated: a"),
    ([{"id": "g", "model": "g.onnx", "kind": "state", "classes": ["unknown", "b"]}], "'unknown' is the state"),
    ([{"id": "label", "model": "g.onnx", "classes": ["a", "b"]}], r"'label' is a topic of every zone's own"),
])
def test_a_classifier_must_name_what_exists(classifiers: list[dict[str, Any]], message: str) -> None:
    doc = {"streams": [{"id": "cam", "url": "rtsp://127.0.0.1:1/x", "zones": [{"id": "gate", "xyxy": [0, 0, 1, 1]}]}],
           "classifiers": classifiers}
    with pytest.raises(ConfigError, match=message):
        validate_config(doc, environ={})
