"""A stretch of an ONNX graph as a PyTorch module, its convolutions' weights trainable (for `--unfreeze`).

Only the operators a MobileNetV2 tail is made of are converted (``Conv``, ``Clip``, ``Relu``, ``Add``,
``AveragePool``, ``GlobalAveragePool``); any other stops with an error that names it. Each ``Conv``'s
weight and bias become :class:`torch.nn.Parameter` s named by their ONNX initializers, so the trained
values go back into the same graph (:meth:`OnnxStretch.trained_initializers`) and the exported model is
the original graph with new numbers: same operators, same input contract. PyTorch is imported here
only (the lab's optional extra, ``pip install -e '.[lab]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.core.errors import ModelContractError

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ModelContractError("fine-tuning with --unfreeze needs PyTorch: pip install -e '.[lab]' (the CPU build "
                             "of torch is enough; --unfreeze 0 trains the head without it)") from exc

__all__ = ["SUPPORTED", "OnnxStretch", "torch"]

SUPPORTED = ("Conv", "Clip", "Relu", "Add", "AveragePool", "GlobalAveragePool")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pad(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """ONNX ``[top, left, bottom, right]`` pads (TensorFlow's SAME pads a stride-2 conv asymmetrically)."""
    if not pads or not any(pads):
        return x
    top, left, bottom, right = (int(p) for p in pads)
    return F.pad(x, (left, right, top, bottom))


class OnnxStretch(torch.nn.Module):
    """The nodes of ``model`` that compute ``end`` from ``start``, run by PyTorch."""

    def __init__(self, model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], start: str, end: str) -> None:
        super().__init__()
        self.start, self.end, self.nodes = start, end, list(nodes)
        inits = {t.name: t for t in model.graph.initializer}
        self._params = torch.nn.ParameterDict()
        self._consts: dict[str, torch.Tensor] = {}
        self._names: dict[str, str] = {}  # ONNX initializer -> key in _params (dots are not allowed there)
        for node in self.nodes:
            if node.op_type not in SUPPORTED:
                raise ModelContractError(f"cannot fine-tune through node {node.name!r}: operator {node.op_type} "
                                         f"(supported: {', '.join(SUPPORTED)})")
            for i, name in enumerate(node.input):
                if name not in inits or name in self._names or name in self._consts:
                    continue
                value = torch.from_numpy(numpy_helper.to_array(inits[name]).astype(np.float32).copy())
                if node.op_type == "Conv" and i in (1, 2):
                    key = f"p{len(self._names)}"
                    self._names[name] = key
                    self._params[key] = torch.nn.Parameter(value)
                else:
                    self._consts[name] = value

    def _value(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in env:
            return env[name]
        if name in self._names:
            param: torch.Tensor = self._params[self._names[name]]
            return param
        return self._consts[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.start: x}
        for node in self.nodes:
            env[node.output[0]] = self._run(node, env)
        out: torch.Tensor = env[self.end]
        return out

    def _run(self, node: onnx.NodeProto, env: dict[str, torch.Tensor]) -> torch.Tensor:
        a = _attrs(node)
        x = self._value(node.input[0], env)
        if node.op_type == "Conv":
            bias = self._value(node.input[2], env) if len(node.input) > 2 and node.input[2] else None
            return F.conv2d(_pad(x, a.get("pads", [])), self._value(node.input[1], env), bias,
                            stride=tuple(a.get("strides", [1, 1])), dilation=tuple(a.get("dilations", [1, 1])),
                            groups=int(a.get("group", 1)))
        if node.op_type == "Clip":
            lo = float(self._value(node.input[1], env)) if len(node.input) > 1 and node.input[1] else None
            hi = float(self._value(node.input[2], env)) if len(node.input) > 2 and node.input[2] else None
            return torch.clamp(x, lo, hi)
        if node.op_type == "Relu":
            return F.relu(x)
        if node.op_type == "Add":
            return x + self._value(node.input[1], env)
        if node.op_type == "GlobalAveragePool":
            return x.mean(dim=(2, 3), keepdim=True)
        kernel = a["kernel_shape"]  # AveragePool
        if any(a.get("pads", [])):
            raise ModelContractError(f"cannot fine-tune through {node.name!r}: a padded AveragePool")
        return F.avg_pool2d(x, tuple(kernel), stride=tuple(a.get("strides", kernel)))

    def trained_initializers(self) -> dict[str, np.ndarray]:
        """The current values of the trainable initializers, by their ONNX names."""
        return {name: self._params[key].detach().cpu().numpy().astype(np.float32) for name, key in self._names.items()}
