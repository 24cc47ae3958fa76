"""The graph surgery of a fine-tune: cut a classifier at its pooled features, put a new head on it.

Shared by :mod:`models.finetune` (the head alone) and :mod:`models.unfreeze` (the last blocks too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.head import Head
from pipeline.core.errors import ModelContractError
from pipeline.inference.contract import set_metadata

POOL_OPS = ("GlobalAveragePool", "AveragePool", "ReduceMean", "GlobalMaxPool")
FEATURES = "features"


def feature_tensor(model: onnx.ModelProto) -> str:
    """The pooled-features tensor: the output of the graph's last pooling node."""
    pools = [n for n in model.graph.node if n.op_type in POOL_OPS]
    if not pools:
        raise ModelContractError("cannot fine-tune this model: its graph has no global/average pooling node "
                                 f"({', '.join(POOL_OPS)}) whose output would be the image features")
    return str(pools[-1].output[0])


def needed_nodes(model: onnx.ModelProto, target: str) -> list[onnx.NodeProto]:
    """The nodes ``target`` depends on, in graph order."""
    producer = {out: i for i, n in enumerate(model.graph.node) for out in n.output}
    keep: set[int] = set()
    todo = [target]
    while todo:
        i = producer.get(todo.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        todo.extend(model.graph.node[i].input)
    return [n for i, n in enumerate(model.graph.node) if i in keep]


def _graph_with_tail(model: onnx.ModelProto, pooled: str, tail: list[onnx.NodeProto],
                     extra: list[onnx.TensorProto], output: onnx.ValueInfoProto) -> onnx.ModelProto:
    nodes = [*needed_nodes(model, pooled), *tail]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used] + extra
    inputs = [i for i in model.graph.input if i.name in used and i.name not in {t.name for t in inits}]
    graph = helper.make_graph(nodes, model.graph.name or "finetuned", inputs, [output], inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name="vigil-finetune")
    for p in model.metadata_props:
        entry = out.metadata_props.add()
        entry.key, entry.value = p.key, p.value
    return out


def prefix_model(model: onnx.ModelProto, cut: str) -> onnx.ModelProto:
    """The graph up to the tensor ``cut``, which is its only output (the frozen part of ``--unfreeze``)."""
    out = helper.make_tensor_value_info(cut, TensorProto.FLOAT, None)
    return _graph_with_tail(model, cut, [], [], out)


def backbone(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The graph cut at the pooled features, with output ``features`` [N, D]; and the cut tensor."""
    pooled = feature_tensor(model)
    flat = helper.make_node("Flatten", [pooled], [FEATURES], axis=1, name="vigil_features_flatten")
    out = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", None])
    return _graph_with_tail(model, pooled, [flat], [], out), pooled


def with_head(model: onnx.ModelProto, head: Head, classes: tuple[str, ...], meta: dict[str, Any]) -> onnx.ModelProto:
    """Backbone + ``Flatten -> Gemm -> Softmax``: output ``probabilities`` [N, classes]."""
    pooled = feature_tensor(model)
    tail = [helper.make_node("Flatten", [pooled], [FEATURES], axis=1, name="vigil_features_flatten"),
            helper.make_node("Gemm", [FEATURES, "vigil_head_w", "vigil_head_b"], ["vigil_logits"],
                             name="vigil_head"),
            helper.make_node("Softmax", ["vigil_logits"], ["probabilities"], axis=1, name="vigil_softmax")]
    extra = [numpy_helper.from_array(head.weights.astype(np.float32), "vigil_head_w"),
             numpy_helper.from_array(head.bias.astype(np.float32), "vigil_head_b")]
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)])
    new = _graph_with_tail(model, pooled, tail, extra, out)
    set_metadata(new, {"num_classes": len(classes), "background_class": "", "output_kind": "probabilities",
                       "labels": "\n".join(classes), **meta})
    onnx.checker.check_model(new)
    return new
