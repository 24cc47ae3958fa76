"""One backbone pass for many classifiers: graft each classifier's own part onto the serving model's graph.

A classifier written by ``vigil models finetune`` is the serving model's graph up to some tensor (the pooled
features for a new head; an earlier block's output with ``--unfreeze``) followed by nodes of its own. Its
shared part is found by comparing graphs, not trusted from metadata: a node is shared when the serving
model has the same node (op, inputs, outputs, attributes) and every weight it reads is byte-for-byte the
serving model's. The classifier's own nodes and weights are copied into the serving graph under the prefix
``vigil_c_<id>/``, with their output as an extra output of the one merged model, so one onnxruntime run
gives the serving model's answer and every grafted classifier's, the backbone computed once.

A classifier that shares nothing beyond the input is a model of its own (:func:`own_part` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from pipeline.core.errors import ModelContractError

PREFIX = "vigil_c_"
#: A fine-tuned head's second output (models.graph.FAMILIARITY): how familiar each crop is, 0..1.
FAMILIARITY = "familiarity"


@dataclass(frozen=True)
class OwnPart:
    """What a classifier adds to the serving graph: its nodes, the weights only it has, the serving model's
    tensors it starts from (``cut``) and its output."""

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    cut: tuple[str, ...]
    outputs: tuple[str, ...]  # the classifier's outputs: its class scores first (then e.g. its familiarity)
    classes: int


def _initializers(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


def own_part(base: onnx.ModelProto, clf: onnx.ModelProto) -> OwnPart | None:
    """The part of ``clf`` beyond what it shares with ``base`` (see the module docstring); None when it shares
    no node with ``base`` (a model of its own)."""
    base_nodes = {n.output[0]: n.SerializeToString() for n in base.graph.node if n.output}
    base_inits, clf_inits = _initializers(base), _initializers(clf)
    shared_tensors = {i.name for i in clf.graph.input}
    if shared_tensors != {i.name for i in base.graph.input if i.name not in base_inits}:
        return None
    own: list[onnx.NodeProto] = []
    for node in clf.graph.node:
        weights_same = all(clf_inits[i] == base_inits.get(i) for i in node.input if i in clf_inits)
        inputs_shared = all(i in shared_tensors or i in clf_inits or not i for i in node.input)
        if not own and weights_same and inputs_shared and base_nodes.get(node.output[0]) == node.SerializeToString():
            shared_tensors.update(node.output)
            continue
        own.append(node)
    if len(own) == len(clf.graph.node):
        return None
    produced = {o for n in own for o in n.output}
    cut = sorted({i for n in own for i in n.input if i in shared_tensors and i not in produced})
    used = {i for n in own for i in n.input}
    inits = [t for t in clf.graph.initializer if t.name in used and clf_inits[t.name] != base_inits.get(t.name)]
    dims = clf.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else 0
    return OwnPart(own, inits, tuple(cut), tuple(o.name for o in clf.graph.output), classes)


def graft(base: onnx.ModelProto, parts: dict[str, OwnPart]) -> tuple[onnx.ModelProto, dict[str, tuple[str, ...]]]:
    """``base`` with each classifier's own part added (names prefixed) and its outputs appended to the graph's
    outputs, after the serving model's own; and classifier id -> its outputs' names in the merged graph."""
    merged = onnx.ModelProto()
    merged.CopyFrom(base)
    outputs: dict[str, tuple[str, ...]] = {}
    for cid, part in parts.items():
        prefix = f"{PREFIX}{cid}/"
        # What the classifier computes or holds itself gets the prefix (a retrained block's outputs keep the
        # serving model's tensor names in its own file); the serving model's tensors and weights keep theirs.
        own = {o for n in part.nodes for o in n.output} | {t.name for t in part.initializers}

        def rename(name: str, prefix: str = prefix, own: set[str] = own) -> str:
            return prefix + name if name in own else name

        for node in part.nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = prefix + (node.name or node.op_type)
            copy.input[:] = [rename(i) for i in node.input]
            copy.output[:] = [rename(o) for o in node.output]
            merged.graph.node.append(copy)
        for t in part.initializers:
            copy_t = onnx.TensorProto()
            copy_t.CopyFrom(t)
            copy_t.name = prefix + t.name
            merged.graph.initializer.append(copy_t)
        outputs[cid] = tuple(rename(o) for o in part.outputs)
        for i, name in enumerate(outputs[cid]):
            if name in {o.name for o in merged.graph.output}:
                continue  # the serving model itself, as a classifier: its own output answers
            width = (part.classes or None) if i == 0 else None
            merged.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width]))
    try:
        onnx.checker.check_model(merged)
    except onnx.checker.ValidationError as exc:
        raise ModelContractError(f"the classifiers {', '.join(parts)} cannot be grafted onto the serving model: "
                                 f"{exc}; retrain them with `vigil models finetune` on this model") from exc
    return merged, outputs
