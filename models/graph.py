"""The graph surgery of a fine-tune: cut a classifier at its pooled features, put a new head on it.

Shared by :mod:`models.finetune` (the head alone) and :mod:`models.unfreeze` (the last blocks too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.head import Familiarity, Head
from pipeline.core.errors import ModelContractError
from pipeline.inference.contract import set_metadata
from pipeline.inference.graft import FAMILIARITY  # the head's second output: how familiar each crop is, 0..1

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
                     extra: list[onnx.TensorProto], output: onnx.ValueInfoProto, *,
                     more: tuple[onnx.ValueInfoProto, ...] = ()) -> onnx.ModelProto:
    nodes = [*needed_nodes(model, pooled), *tail]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used] + extra
    inputs = [i for i in model.graph.input if i.name in used and i.name not in {t.name for t in inits}]
    graph = helper.make_graph(nodes, model.graph.name or "finetuned", inputs, [output, *more], inits)
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


def _reduce(op: str, x: str, out: str, opset: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """``op`` over axis 1, kept: axes an attribute before opset 18, an input from it on."""
    if opset >= 18:
        axes = numpy_helper.from_array(np.array([1], np.int64), f"{out}_axes")
        return helper.make_node(op, [x, axes.name], [out], keepdims=1, name=out), [axes]
    return helper.make_node(op, [x], [out], axes=[1], keepdims=1, name=out), []


def _familiarity(f: Familiarity, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``familiarity`` [N, 1] from the features (:class:`models.head.Familiarity`)."""
    norm, norm_init = _reduce("ReduceL2", FEATURES, "vigil_fam_norm", opset)
    best, best_init = _reduce("ReduceMax", "vigil_fam_cos", "vigil_fam_best", opset)
    consts = {"vigil_fam_centroids": f.centroids.astype(np.float32), "vigil_fam_eps": np.float32(1e-12),
              "vigil_fam_one": np.float32(1.0), "vigil_fam_two": np.float32(2.0), "vigil_fam_four": np.float32(4.0),
              "vigil_fam_distance": np.float32(f.distance)}
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()] + norm_init + best_init
    steps = [("Max", ["vigil_fam_norm", "vigil_fam_eps"], "vigil_fam_safe"),
             ("Div", [FEATURES, "vigil_fam_safe"], "vigil_fam_unit"),
             ("MatMul", ["vigil_fam_unit", "vigil_fam_centroids"], "vigil_fam_cos"),  # cosine to each class
             None,  # the best of them: ReduceMax
             ("Sub", ["vigil_fam_one", "vigil_fam_best"], "vigil_fam_d"),  # cosine distance to the nearest
             ("Div", ["vigil_fam_d", "vigil_fam_distance"], "vigil_fam_ratio"),
             ("Sub", ["vigil_fam_two", "vigil_fam_ratio"], "vigil_fam_margin"),
             ("Mul", ["vigil_fam_margin", "vigil_fam_four"], "vigil_fam_logit"),
             ("Sigmoid", ["vigil_fam_logit"], FAMILIARITY)]
    nodes = [norm] + [best if step is None else helper.make_node(step[0], step[1], [step[2]], name=step[2])
                      for step in steps]
    return nodes, inits


def with_head(model: onnx.ModelProto, head: Head, classes: tuple[str, ...], meta: dict[str, Any]) -> onnx.ModelProto:
    """Backbone + ``Flatten -> Gemm -> Softmax``: output ``probabilities`` [N, classes]; with the head's
    familiarity, a second output ``familiarity`` [N, 1] (what a ``state`` classifier's score is weighed by)."""
    pooled = feature_tensor(model)
    tail = [helper.make_node("Flatten", [pooled], [FEATURES], axis=1, name="vigil_features_flatten"),
            helper.make_node("Gemm", [FEATURES, "vigil_head_w", "vigil_head_b"], ["vigil_logits"],
                             name="vigil_head"),
            helper.make_node("Softmax", ["vigil_logits"], ["probabilities"], axis=1, name="vigil_softmax")]
    extra = [numpy_helper.from_array(head.weights.astype(np.float32), "vigil_head_w"),
             numpy_helper.from_array(head.bias.astype(np.float32), "vigil_head_b")]
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)])
    more: tuple[onnx.ValueInfoProto, ...] = ()
    if head.familiarity is not None:
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=17)
        nodes, inits = _familiarity(head.familiarity, opset)
        tail, extra = tail + nodes, extra + inits
        more = (helper.make_tensor_value_info(FAMILIARITY, TensorProto.FLOAT, ["N", 1]),)
    new = _graph_with_tail(model, pooled, tail, extra, out, more=more)
    set_metadata(new, {"num_classes": len(classes), "background_class": "", "output_kind": "probabilities",
                       "labels": "\n".join(classes), **meta})
    onnx.checker.check_model(new)
    return new
