"""Build variant ONNX models from the shared MobileNetV2 for tests (written to tmp dirs, never the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def torchvision_style(shared_model: Path, out: Path) -> Path:
    """The shared model re-wrapped with a torchvision contract.

    Input ``input``: float32 NCHW [N, 3, 224, 224] normalised with ImageNet mean/std (nothing in the
    metadata says so: the runtime must apply torchvision's defaults). The graph undoes that
    normalisation, rounds back to uint8 NHWC and runs the original network. Output ``logits``:
    log-probabilities over the 1000 ImageNet classes (background dropped), so the runtime must
    apply its own softmax. Any normalisation mistake in the runtime changes the labels.
    """
    model = onnx.load(str(shared_model))
    g = model.graph
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    logits_1001 = softmax.input[0]
    g.node.remove(softmax)
    del model.metadata_props[:]
    g.initializer.extend([
        numpy_helper.from_array((STD * 255).reshape(1, 3, 1, 1), "tv_scale"),
        numpy_helper.from_array((MEAN * 255).reshape(1, 3, 1, 1), "tv_bias"),
        numpy_helper.from_array(np.array(0, np.float32), "tv_lo"),
        numpy_helper.from_array(np.array(255, np.float32), "tv_hi"),
        numpy_helper.from_array(np.array([1], np.int64), "tv_start"),
        numpy_helper.from_array(np.array([1001], np.int64), "tv_end"),
        numpy_helper.from_array(np.array([1], np.int64), "tv_axis"),
    ])
    prologue = [
        helper.make_node("Mul", ["input", "tv_scale"], ["tv_0"]),
        helper.make_node("Add", ["tv_0", "tv_bias"], ["tv_1"]),
        helper.make_node("Transpose", ["tv_1"], ["tv_2"], perm=[0, 2, 3, 1]),
        helper.make_node("Round", ["tv_2"], ["tv_3"]),
        helper.make_node("Clip", ["tv_3", "tv_lo", "tv_hi"], ["tv_4"]),
        helper.make_node("Cast", ["tv_4"], ["images"], to=TensorProto.UINT8),
    ]
    epilogue = [
        helper.make_node("Softmax", [logits_1001], ["tv_p"], axis=1),
        helper.make_node("Log", ["tv_p"], ["tv_logp"]),
        helper.make_node("Slice", ["tv_logp", "tv_start", "tv_end", "tv_axis"], ["logits"]),
    ]
    nodes = prologue + list(g.node) + epilogue
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def not_an_image_model(out: Path) -> Path:
    """A valid ONNX model whose input is a [N, 16] feature vector, not an image."""
    w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["scores"])], "features",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(out))
    return out


def labels_without_background(shared_labels: Path, out: Path) -> Path:
    """The 1000 ImageNet names (the shared list minus its line 0, ``background``)."""
    lines = shared_labels.read_text().splitlines()
    out.write_text("\n".join(lines[1:]) + "\n")
    return out
