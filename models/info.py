"""`vigil models info`: what a model file is, in one dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.labels import resolve_labels
from pipeline.inference.model_store import sha256_file

# Inputs of quantisation operators that hold scales and zero points, not weights (ONNX operator specs).
_QUANT_PARAM_INPUTS: dict[str, frozenset[int]] = {
    "QuantizeLinear": frozenset({1, 2}), "DequantizeLinear": frozenset({1, 2}),
    "DynamicQuantizeLinear": frozenset(), "ConvInteger": frozenset({2, 3}), "MatMulInteger": frozenset({2, 3}),
    "QLinearConv": frozenset({1, 2, 4, 5, 6, 7}), "QLinearMatMul": frozenset({1, 2, 4, 5, 6, 7}),
}


def count_weights(model: onnx.ModelProto) -> int:
    """Elements of the model's learned tensors: float and quantised weights and biases.

    Not counted: the scales and zero points of quantisation operators, integer shape constants (int64
    initializers such as a Reshape's target shape) and scalars (a Clip's bounds, input normalisation
    constants), so an int8 copy counts what its fp32 source counts.
    """
    quant_params = {node.input[i] for node in model.graph.node
                    for i in _QUANT_PARAM_INPUTS.get(node.op_type, frozenset()) if i < len(node.input)}
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.dims and t.name not in quant_params and t.data_type != onnx.TensorProto.INT64)


def model_info(path: Path, labels: Path | None = None) -> dict[str, Any]:
    model = load_onnx(path)
    contract = read_contract(model, str(path))
    names = resolve_labels(contract, path, labels)
    params = count_weights(model)
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "parameters": params,
        "contract": contract.describe(),
        "input": {"name": contract.input_name, "dtype": contract.dtype, "layout": contract.layout,
                  "size": [contract.height, contract.width], "color": contract.color,
                  "mean": contract.mean, "std": contract.std, "dynamic_batch": contract.dynamic_batch},
        "output": {"name": contract.output_name, "kind": contract.output_kind,
                   "num_classes": contract.num_classes, "background_class": contract.background_class},
        "classes_sample": names[:5],
        "metadata": {k: (v if len(v) < 200 else v[:200] + "…") for k, v in contract.metadata.items()},
    }
