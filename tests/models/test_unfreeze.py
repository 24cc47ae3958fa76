"""`vigil models finetune --unfreeze N`: the last blocks in PyTorch, from the ONNX graph, and back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.finetune import FEATURES, FinetuneOptions, backbone, feature_tensor, finetune, prefix_model
from models.graph import needed_nodes
from models.onnx_torch import OnnxStretch
from models.unfreeze import pooled_features, split_for
from pipeline.core.errors import ModelContractError
from pipeline.core.preprocess import read_image_rgb, resize
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from tests.models.lab_data import noisy_frames_task, video_dataset


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("unfreeze", "cut_block"), [(1, "expanded_conv_15/add"), (4, "expanded_conv_12/add"),
                                                      (3, "expanded_conv_13/project"), (16, "expanded_conv/project")])
def test_the_tail_in_torch_computes_what_the_onnx_graph_does(shared_model: Path, images_dir: Path, unfreeze: int,
                                                             cut_block: str) -> None:
    model = onnx.load(str(shared_model))
    pooled = feature_tensor(model)
    split = split_for(model, pooled, unfreeze)
    assert cut_block in split.cut and split.blocks == 17  # the cut is the input of the first unfrozen block
    photos = np.stack([resize(read_image_rgb(p), 224, 224) for p in sorted(images_dir.glob("*.png"))])
    reference = session(backbone(model)[0]).run([FEATURES], {"images": photos})[0]
    acts = session(prefix_model(model, split.cut)).run([split.cut], {"images": photos})[0]
    tail = OnnxStretch(model, split.tail, split.cut, split.tail[-1].output[0])
    assert float(np.abs(pooled_features(tail, acts) - reference).max()) < 1e-4  # measured: 3-8e-6


@pytest.mark.parametrize("unfreeze", [0, 17])
def test_unfreezing_more_blocks_than_there_are_is_refused(shared_model: Path, unfreeze: int) -> None:
    model = onnx.load(str(shared_model))
    with pytest.raises(ModelContractError, match="unfreeze 1 to 16"):
        split_for(model, feature_tensor(model), unfreeze)


@pytest.mark.alone
def test_two_unfrozen_blocks_are_trained_and_exported_into_the_same_graph(tmp_path: Path, shared_model: Path,
                                                                          video_dir: Path) -> None:
    data = video_dataset(video_dir, tmp_path / "data", per_class=6)
    out = tmp_path / "tuned.onnx"
    result = finetune(shared_model, data, out, FinetuneOptions(unfreeze=2, deep_epochs=3, augment_copies=1,
                                                               progress=False))
    doc = result.as_dict()
    assert doc["unfrozen_blocks"] == 2 and 1 <= len(doc["history"]["val_loss"]) <= 3
    assert 0 < doc["head_only_val_accuracy"] <= 1 and doc["trained_parameters"] > 1_000_000
    assert result.torch_onnx_max_diff is not None and result.torch_onnx_max_diff < 1e-4
    # The same operators as the base model (and the head): the runtime and the pipeline take it unchanged. Its
    # second output, the familiarity (how close a crop is to what it was trained on), uses plain ONNX operators.
    base_ops, tuned = Counter(n.op_type for n in onnx.load(str(shared_model)).graph.node), onnx.load(str(out))
    assert set(Counter(n.op_type for n in needed_nodes(tuned, "probabilities"))) <= set(base_ops) | {"Flatten", "Gemm"}
    assert [o.name for o in tuned.graph.output] == ["probabilities", "familiarity"]
    before = {t.name: t for t in onnx.load(str(shared_model)).graph.initializer}
    changed = [t.name for t in tuned.graph.initializer if t.name in before
               and not np.array_equal(onnx.numpy_helper.to_array(t), onnx.numpy_helper.to_array(before[t.name]))]
    assert changed and all(name in {i for n in split_for(tuned, feature_tensor(tuned), 2).tail for i in n.input}
                           for name in changed)  # only the tail's weights moved
    with ModelRuntime(out, RuntimeOptions(device="cpu")) as rt:
        assert rt.class_names == list(result.classes) and (rt.contract.dtype, rt.contract.layout) == ("uint8", "NHWC")
    # The training report beside the model: JSON with the hyperparameters and history, and its two plots.
    report = json.loads((tmp_path / "tuned.onnx.report" / "report.json").read_text())
    assert report["hyperparameters"]["unfreeze"] == 2
    assert report["head_only_val_accuracy"] == doc["head_only_val_accuracy"]
    assert len(report["history"]["train_loss"]) == len(report["history"]["val_accuracy"]) >= 1
    assert sum(map(sum, report["confusion"]["matrix"])) == result.val_images and report["seconds"] > 0
    for name in ("curves.png", "confusion.png"):
        image = cv2.imread(str(tmp_path / "tuned.onnx.report" / name))
        assert image is not None and image.std() > 10  # drawn, not blank


@pytest.mark.alone
def test_unfreezing_four_blocks_tells_noisy_frames_from_clean_ones_where_the_head_alone_cannot(
        tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    """The acceptance task: sensor noise of 6 grey levels is too subtle for ImageNet's pooled features (the head
    alone stays under 0.9 on held-out frames); four trained blocks lift it by at least 5 points."""
    data, held_x, held_y = noisy_frames_task(video_dir, tmp_path / "noise")
    accuracy = {}
    for unfreeze in (0, 4):
        out = tmp_path / f"u{unfreeze}.onnx"
        result = finetune(shared_model, data, out, FinetuneOptions(unfreeze=unfreeze, augment_copies=0,
                                                                   backbone_lr_ratio=0.3, progress=False))
        with ModelRuntime(out, RuntimeOptions(device="cpu")) as rt:
            accuracy[unfreeze] = float((rt.probabilities(held_x).argmax(1) == held_y).mean())
        print(f"\nnoise task, --unfreeze {unfreeze}: held-out {accuracy[unfreeze]:.3f}, validation "
              f"{result.exported_val_accuracy:.3f}, {result.seconds:.0f} s")
    assert accuracy[0] < 0.9 and accuracy[4] >= accuracy[0] + 0.05, accuracy


@pytest.mark.alone
def test_search_starts_from_the_defaults_finds_no_worse_and_resumes(tmp_path: Path, shared_model: Path,
                                                                    video_dir: Path) -> None:
    from models.search import SearchOptions, search

    data = video_dataset(video_dir, tmp_path / "data", per_class=5)
    out, opts = tmp_path / "searched.onnx", FinetuneOptions(deep_epochs=4, progress=False)
    found = search(shared_model, data, out, opts, SearchOptions(trials=3, unfreeze_choices=(0, 1)))
    first = found.trials[0]
    assert first["params"] == {"learning_rate": opts.learning_rate, "weight_decay": opts.weight_decay,
                               "augment_copies": opts.augment_copies, "augment_strength": 1.0, "unfreeze": 0}
    done = [t for t in found.trials if t["state"] == "complete"]
    assert len(found.trials) == 3 and min(t["val_loss"] for t in done) <= first["val_loss"]
    assert found.best.head.val_loss == pytest.approx(min(t["val_loss"] for t in done), rel=1e-3)  # refit, same seed
    assert found.study.exists() and out.exists()
    report = json.loads((tmp_path / "searched.onnx.report" / "report.json").read_text())
    assert report["search"]["best_params"] == found.best_params and len(report["search"]["trials"]) == 3
    again = search(shared_model, data, out, opts, SearchOptions(trials=1, unfreeze_choices=(0, 1)))
    assert [t["number"] for t in again.trials] == [0, 1, 2, 3]  # resumed from the study file


def test_the_blocks_train_on_the_gpu_only_when_pytorch_sees_one() -> None:
    from models.onnx_torch import torch
    from models.unfreeze import training_device

    assert training_device("cpu") == "cpu"
    assert training_device("cuda") == training_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
