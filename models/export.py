"""Export torchvision's MobileNetV2 to ONNX with Vigil's input contract folded into the graph.

The exported graph takes ``uint8 [N, 224, 224, 3]`` RGB (150 KB a frame on the wire) and does the
NHWC->NCHW transpose, the /255 and the ImageNet mean/std normalisation itself, so the GPU does the
arithmetic and callers never normalise. It outputs softmax probabilities over 1000 classes and
carries its class names and contract in ``metadata_props``. Needs ``pip install 'vigil[export]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelError, ModelNotFoundError
from pipeline.inference.contract import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import torchvision
    except ImportError as exc:
        raise ModelError("`vigil models export` needs PyTorch and torchvision: pip install 'vigil[export]' "
                         "(or use `vigil models fetch`, or --model PATH)") from exc
    return torch, torchvision


def _load_weights(torch: Any, torchvision: Any, weights: str) -> tuple[Any, list[str], str]:
    """Build MobileNetV2 with ``weights``: DEFAULT/IMAGENET1K_V1/IMAGENET1K_V2, a .pth file, or none."""
    api = torchvision.models.MobileNet_V2_Weights
    if weights.lower() == "none":
        log.warning("exporting MobileNetV2 with random weights (--weights none): for tests only")
        return torchvision.models.mobilenet_v2(weights=None), list(api.DEFAULT.meta["categories"]), "random"
    if Path(weights).is_file():
        model = torchvision.models.mobilenet_v2(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model, list(api.DEFAULT.meta["categories"]), Path(weights).name
    try:
        enum = api[weights] if weights != "DEFAULT" else api.DEFAULT
    except KeyError as exc:
        raise ModelError(f"unknown weights {weights!r}: use DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2, a .pth "
                         "file or none") from exc
    try:
        model = torchvision.models.mobilenet_v2(weights=enum)
    except Exception as exc:  # urllib/torch.hub errors when offline
        raise ModelNotFoundError(f"cannot download torchvision weights {enum} ({exc}); offline? pass "
                                 "--weights FILE.pth, or use --model PATH") from exc
    return model, list(enum.meta["categories"]), str(enum)


def export_mobilenet_v2(out: Path, weights: str = "DEFAULT", opset: int = 17, size: int = 224) -> Path:
    """Export torchvision MobileNetV2 as a uint8 NHWC ONNX classifier at ``out``."""
    torch, torchvision = _import_torch()
    import onnx

    from pipeline.inference.contract import set_metadata

    net, categories, weights_name = _load_weights(torch, torchvision, weights)

    class Uint8Classifier(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner.eval()
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * std))
            self.register_buffer("bias", -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std)

        def forward(self, images: Any) -> Any:
            x = images.permute(0, 3, 1, 2).float() * self.scale + self.bias
            return torch.softmax(self.inner(x), dim=1)

    wrapper = Uint8Classifier(net).eval()
    dummy = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(out), input_names=["images"], output_names=["probabilities"],
                          dynamic_axes={"images": {0: "N"}, "probabilities": {0: "N"}}, opset_version=opset,
                          dynamo=False)
    model = onnx.load(str(out))
    set_metadata(model, {
        "input_layout": "NHWC", "input_color": "RGB", "input_dtype": "uint8", "input_size": f"{size}x{size}",
        "num_classes": len(categories), "output_kind": "probabilities", "labels": "\n".join(categories),
        "model_name": "mobilenet_v2-torchvision", "model_version": weights_name,
        "source": f"torchvision {torchvision.__version__} mobilenet_v2 weights={weights_name}",
    })
    onnx.save(model, str(out))
    log.info("exported %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
