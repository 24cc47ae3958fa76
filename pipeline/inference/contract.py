"""What an ONNX classifier expects as input and gives as output, read from the graph and metadata.

Two conventions are common and both are supported behind one interface:

* Vigil/TFLite style (the shared model): ``uint8`` NHWC RGB, normalisation inside the graph,
  probabilities over 1001 classes with class 0 = background.
* torchvision style: ``float32`` NCHW, normalised outside the graph with ImageNet mean/std, logits
  over 1000 classes.

The graph gives names, dtypes and shapes; ``metadata_props`` (keys below) refine what the graph
cannot say. Keys Vigil reads and :mod:`models.export` writes::

    input_layout      NHWC | NCHW
    input_color       RGB | BGR
    input_size        224x224           (HxW; only needed when the graph's spatial dims are dynamic)
    input_mean        0.485,0.456,0.406 (0..1 scale, float inputs only)
    input_std         0.229,0.224,0.225
    num_classes       1001
    background_class  0                 (index of a "no object" class, if any)
    output_kind       probabilities | logits
    labels            newline-separated class names
    model_name / model_version
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
from onnx import TensorProto

from pipeline.core.errors import ModelContractError, ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPES: dict[int, str] = {TensorProto.UINT8: "uint8", TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}


@dataclass(frozen=True)
class ModelContract:
    """Everything the runtime needs to feed a classifier and read its answer."""

    input_name: str
    output_name: str
    layout: Literal["NHWC", "NCHW"]
    dtype: str
    height: int
    width: int
    color: Literal["RGB", "BGR"]
    mean: tuple[float, float, float] | None  # 0..1 scale; None when the graph normalises itself
    std: tuple[float, float, float] | None
    num_classes: int
    background_class: int | None
    output_kind: Literal["probabilities", "logits"]
    dynamic_batch: bool
    metadata: dict[str, str]

    @property
    def name(self) -> str:
        return self.metadata.get("model_name", "")

    @property
    def input_shape_tail(self) -> str:
        """The input's shape after the batch axis, e.g. ``224x224x3`` (TensorRT shape profiles)."""
        return f"{self.height}x{self.width}x3" if self.layout == "NHWC" else f"3x{self.height}x{self.width}"

    @property
    def version(self) -> str:
        return self.metadata.get("model_version", "")

    def describe(self) -> str:
        norm = "in graph" if self.mean is None else f"mean={self.mean} std={self.std}"
        return (f"input {self.input_name!r} {self.dtype} {self.layout} {self.color} "
                f"{self.height}x{self.width} (normalisation {norm}); output {self.output_name!r} "
                f"{self.output_kind} over {self.num_classes} classes"
                + (f", background class {self.background_class}" if self.background_class is not None else "")
                + ("; dynamic batch" if self.dynamic_batch else "; fixed batch"))


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file, wrapping onnx's errors with what to do about them."""
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist; pass --model PATH, or run "
                             "`vigil models fetch` / `vigil models export`")
    if path.is_dir():
        raise ModelLoadError(f"model path {path} is a directory; point it at the .onnx file")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...: all mean "not a model"
        raise ModelLoadError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc}); "
                             "re-download it with `vigil models fetch` or re-export it") from exc


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _floats(text: str, key: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise ModelContractError(f"metadata {key}={text!r} is not three comma-separated numbers") from exc
    if len(values) != 3:
        raise ModelContractError(f"metadata {key}={text!r} must have 3 values (R,G,B)")
    return (values[0], values[1], values[2])


def _layout(dims: list[int | None], meta: dict[str, str], where: str) -> Literal["NHWC", "NCHW"]:
    declared = meta.get("input_layout", "").upper()
    if declared in ("NHWC", "NCHW"):
        return "NHWC" if declared == "NHWC" else "NCHW"
    if dims[3] == 3:
        return "NHWC"
    if dims[1] == 3:
        return "NCHW"
    raise ModelContractError(f"{where}: cannot tell whether the input is NHWC or NCHW from shape {dims}; "
                             "set metadata input_layout")


def _size(dims: list[int | None], layout: str, meta: dict[str, str], where: str) -> tuple[int, int]:
    h, w = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    if h and w:
        return h, w
    size = meta.get("input_size", "")
    try:
        hs, ws = size.lower().split("x")
        return int(hs), int(ws)
    except ValueError as exc:
        raise ModelContractError(f"{where}: the input's height/width are dynamic and metadata input_size "
                                 "(e.g. 224x224) is missing") from exc


def _output_kind(model: onnx.ModelProto, output_name: str, meta: dict[str, str]) -> Literal[
        "probabilities", "logits"]:
    declared = meta.get("output_kind", "").lower()
    if declared in ("probabilities", "logits"):
        return "probabilities" if declared == "probabilities" else "logits"
    producer = next((n for n in model.graph.node if output_name in n.output), None)
    if producer is not None and producer.op_type == "Softmax":
        return "probabilities"
    return "probabilities" if any(k in output_name.lower() for k in ("prob", "softmax")) else "logits"


def read_contract(model: onnx.ModelProto, where: str = "model") -> ModelContract:
    """Derive the :class:`ModelContract` of a loaded ONNX classifier, or explain why it is not one."""
    meta = {p.key: p.value for p in model.metadata_props}
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelContractError(f"{where}: expected exactly one image input, found {len(inputs)} "
                                 f"({', '.join(i.name for i in inputs) or 'none'})")
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    dims = _dims(inp)
    if elem not in _DTYPES or len(dims) != 4:
        raise ModelContractError(
            f"{where}: input {inp.name!r} is not an image tensor: expected a rank-4 uint8/float32/float16 "
            f"tensor [N,H,W,3] or [N,3,H,W], found {onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else '?'}"
            f" with shape {dims}")
    layout = _layout(dims, meta, where)
    channels = dims[3] if layout == "NHWC" else dims[1]
    if channels not in (3, None):
        raise ModelContractError(f"{where}: input {inp.name!r} has {channels} channels; Vigil feeds RGB (3)")
    height, width = _size(dims, layout, meta, where)
    if len(model.graph.output) < 1:
        raise ModelContractError(f"{where}: the graph has no output")
    out = model.graph.output[0]
    out_dims = _dims(out)
    if len(out_dims) != 2 or not out_dims[1]:
        raise ModelContractError(f"{where}: output {out.name!r} has shape {out_dims}; a classifier "
                                 "outputs [N, num_classes]")
    num_classes = int(meta.get("num_classes", out_dims[1]))
    background: int | None = None
    if "background_class" in meta:
        background = int(meta["background_class"]) if meta["background_class"] != "" else None
    elif num_classes == 1001:
        background = 0  # the TF/TFLite ImageNet convention
    dtype = _DTYPES[elem]
    mean = std = None
    if dtype != "uint8":
        mean = _floats(meta.get("input_mean", ",".join(map(str, IMAGENET_MEAN))), "input_mean")
        std = _floats(meta.get("input_std", ",".join(map(str, IMAGENET_STD))), "input_std")
        if any(s <= 0 for s in std):
            raise ModelContractError(f"{where}: metadata input_std must be positive")
    color: Literal["RGB", "BGR"] = "BGR" if meta.get("input_color", "RGB").upper() == "BGR" else "RGB"
    return ModelContract(
        input_name=inp.name, output_name=out.name, layout=layout, dtype=dtype, height=height, width=width,
        color=color, mean=mean, std=std, num_classes=num_classes, background_class=background,
        output_kind=_output_kind(model, out.name, meta), dynamic_batch=dims[0] is None, metadata=meta)


def set_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Set (replace) ``metadata_props`` entries on ``model``."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
