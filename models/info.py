"""`vigil models info`: what a model file is, in one dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.labels import resolve_labels
from pipeline.inference.model_store import sha256_file


def model_info(path: Path, labels: Path | None = None) -> dict[str, Any]:
    model = load_onnx(path)
    contract = read_contract(model, str(path))
    names = resolve_labels(contract, path, labels)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
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
