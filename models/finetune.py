"""`vigil models finetune`: transfer learning on your own frames (the head alone needs no PyTorch).

1. Cut the classifier's graph at its pooled features (the output of the last global/average pool:
   1280 values per image for MobileNetV2; in the shared model the input of the ``Logits`` 1x1 conv).
2. Extract features of the training images with augmentation (random resized crops, horizontal
   flips, brightness/contrast/saturation jitter) and of the validation images as the pipeline sees
   them (the whole frame squashed to the model's input).
3. Train a softmax head (multinomial logistic regression, L2-regularised, Adam) in numpy, with early
   stopping on the validation loss; the best epoch's weights are kept.
4. Write a new ONNX model: the original graph up to the features, then ``Flatten -> Gemm -> Softmax``
   (feature standardisation is folded into the Gemm). The input contract is the base model's (uint8
   NHWC for the shared model); the class names go into the ``labels`` metadata, with ``model_name``,
   ``model_version`` and ``base_model_sha256``, so the runtime and the pipeline report the new classes.

The head and the options are :mod:`models.head`'s, the graph surgery :mod:`models.graph`'s (both shared
with ``--unfreeze``). With ``unfreeze`` the last blocks are trained too (:mod:`models.unfreeze`, PyTorch);
:mod:`models.search` searches the hyperparameters; every model gets its training report (:mod:`models.training_report`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.progress import Progress

from models.dataset import ImageFolder
from models.evaluate import make_progress, progress_context
from models.graph import FEATURES, backbone, feature_tensor, prefix_model, with_head
from models.head import F32, U8, FinetuneOptions, Head, History, Labels, familiarity, train_head
from models.training_report import write_training_report
from pipeline.core.config import GpuOptions, default_engine_cache
from pipeline.core.errors import DatasetError
from pipeline.core.preprocess import resize
from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.model_store import sha256_file
from pipeline.inference.providers import create_session, plan_providers
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

__all__ = ["FEATURES", "FeatureExtractor", "FinetuneOptions", "FinetuneResult", "Fitted", "augment", "backbone",
           "export", "feature_tensor", "finetune", "fit", "prefix_model", "train_head", "with_head"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    model: Path
    classes: tuple[str, ...]
    feature_tensor: str
    feature_size: int
    train_images: int
    train_features: int
    val_images: int
    head: Head
    exported_val_accuracy: float
    seconds: float
    history: History = field(default_factory=History)
    deep: Any = None  # models.unfreeze.DeepResult with --unfreeze
    torch_onnx_max_diff: float | None = None  # exported model vs the torch model, validation probabilities

    def as_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), "classes": list(self.classes), "feature_tensor": self.feature_tensor,
                "feature_size": self.feature_size, "train_images": self.train_images,
                "train_features": self.train_features, "val_images": self.val_images,
                "best_epoch": self.head.best_epoch, "epochs_run": self.head.epochs_run,
                "val_accuracy": self.head.val_accuracy, "val_loss": self.head.val_loss,
                "exported_val_accuracy": self.exported_val_accuracy, "seconds": self.seconds,
                "history": asdict(self.history),
                **(self.deep.as_dict() if self.deep is not None else {"unfrozen_blocks": 0}),
                "torch_onnx_max_diff": self.torch_onnx_max_diff}


# ------------------------------------------------------------------------------------------ features
def augment(image: U8, rng: np.random.Generator, size: tuple[int, int], strength: float = 1.0) -> U8:
    """A random resized crop (60-100% of the area, aspect 3/4-4/3), flip and colour jitter of ``image``; at
    ``strength`` s the ranges shrink to 1 - 0.4 s of the area and s of the jitter (0: only the flip)."""
    h, w = image.shape[:2]
    area = h * w * rng.uniform(1 - 0.4 * strength, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)) * strength))
    ch, cw = min(h, round(np.sqrt(area / aspect))), min(w, round(np.sqrt(area * aspect)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = resize(np.ascontiguousarray(image[y:y + ch, x:x + cw]), *size).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out *= rng.uniform(1 - 0.25 * strength, 1 + 0.25 * strength)  # brightness
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - 0.25 * strength, 1 + 0.25 * strength) + mean  # contrast
    grey = out.mean(axis=2, keepdims=True)
    out = (out - grey) * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength) + grey  # saturation
    return np.asarray(np.clip(out, 0, 255), dtype=np.uint8)


class FeatureExtractor:
    """Runs the cut graph; feeds it exactly as the runtime feeds the whole model. ``cut``: the graph up to that
    tensor instead of the pooled features (``--unfreeze``: the frozen blocks' activations)."""

    def __init__(self, base: Path, device: str, cut_at: str | None = None) -> None:
        # The whole model's runtime only lends its contract and input preparation: CPU, one lane.
        self.runtime = ModelRuntime(base, RuntimeOptions(device="cpu", warmup=False, lanes=1)).open()
        model = load_onnx(base)
        cut, self.pooled = backbone(model)
        self.output = FEATURES
        if cut_at is not None:
            cut, self.output = prefix_model(model, cut_at), cut_at
        c = self.runtime.contract
        raw = cut.SerializeToString()
        plan = plan_providers(device, GpuOptions(), batch_size=32, input_name=c.input_name,  # no TensorRT: CUDA
                              input_shape_tail=c.input_shape_tail, engine_root=default_engine_cache(), model_bytes=raw)
        self.session = create_session(raw, plan, intra_op_threads=0)  # every core
        self.input_name = c.input_name

    def __call__(self, frames: U8) -> F32:
        out = self.session.run([self.output], {self.input_name: self.runtime.prepare(frames)})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.runtime.close()


def extract(extractor: FeatureExtractor, images: list[U8], batch: int,
            advance: Callable[[int], None]) -> F32:
    parts = []
    for i in range(0, len(images), batch):
        parts.append(extractor(np.stack(images[i:i + batch])))
        advance(len(parts[-1]))
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ driver
def _features(extractor: FeatureExtractor, split: tuple[ImageFolder, ImageFolder], size: tuple[int, int],
              opts: FinetuneOptions, progress: Progress | None) -> tuple[F32, Labels, F32, Labels, list[U8]]:
    train, val = split
    big = (size[0] * 8 // 7, size[1] * 8 // 7)  # room for crops, like the usual 256 -> 224
    tr = train.load(big, strict_sizes=opts.strict_sizes)
    va = val.load(size, strict_sizes=opts.strict_sizes)
    rng = np.random.default_rng(opts.seed)
    views: list[U8] = []
    labels: list[int] = []
    for img, label in zip(tr.images, tr.labels, strict=True):
        views.append(resize(img, *size))
        views.extend(augment(img, rng, size, opts.augment_strength) for _ in range(opts.augment_copies))
        labels.extend([int(label)] * (1 + opts.augment_copies))
    task = progress.add_task("extracting features", total=len(views) + len(va.images)) if progress else None

    def advance(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    val_images = list(va.images)
    xtr = extract(extractor, views, 32, advance)
    xva = extract(extractor, val_images, 32, advance)
    return xtr, np.array(labels, np.int64), xva, va.labels, val_images


@dataclass(frozen=True)
class _Trained:
    head: Head
    graph: onnx.ModelProto  # the model to put the head on (with --unfreeze: the tail's trained weights in it)
    history: History
    deep: Any = None  # models.unfreeze.DeepResult with --unfreeze


def _train(model: onnx.ModelProto, data: tuple[F32, Labels, F32, Labels], k: int, opts: FinetuneOptions,
           progress: Progress | None, *, observe: Callable[[int, float, float], None] | None = None) -> _Trained:
    xtr, ytr, xva, yva = data
    task = progress.add_task("training", total=opts.deep_epochs if opts.unfreeze else opts.epochs) \
        if progress else None

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=epoch, description=f"training: val loss {loss:.3f} acc {acc:.3f}")
        if observe is not None:
            observe(epoch, loss, acc)

    if not opts.unfreeze:
        history = History()
        head = train_head((xtr, ytr), (xva, yva), k, opts, on_epoch=on_epoch, history=history)
        return _Trained(replace(head, familiarity=familiarity(xtr, ytr, k)), model, history)
    from models.unfreeze import split_for, train_tail, with_trained_tail  # PyTorch: only with --unfreeze

    split = split_for(model, feature_tensor(model), opts.unfreeze)
    deep = train_tail(model, split, ((xtr, ytr), (xva, yva)), k, opts, on_epoch=on_epoch)
    return _Trained(deep.head, with_trained_tail(model, split, deep.initializers), deep.history, deep)


@dataclass(frozen=True)
class Fitted:
    """A trained head (and tail), before export."""

    model: onnx.ModelProto
    classes: tuple[str, ...]
    pooled: str
    split_sizes: tuple[int, int, int]  # training images, training views, validation images
    val: tuple[Labels, list[U8]]  # labels and images of the validation split
    trained: _Trained
    started: float  # time.perf_counter()


def fit(base: Path, data_dir: Path, opts: FinetuneOptions,
        on_epoch: Callable[[int, float, float], None] | None = None) -> Fitted:
    """Extract, train (the head, and with ``unfreeze`` the last blocks); ``on_epoch(epoch, val loss, val acc)``."""
    t0 = time.perf_counter()
    model = load_onnx(base)
    contract = read_contract(model, str(base))
    pooled = feature_tensor(model)  # fail fast on a model that cannot be cut, before reading any image
    cut = None
    if opts.unfreeze:
        from models.unfreeze import split_for

        cut = split_for(model, pooled, opts.unfreeze).cut
    folder = ImageFolder.scan(data_dir)
    train, val = folder.split(opts.val_fraction, opts.seed)
    extractor = FeatureExtractor(base, opts.device, cut)
    try:
        with progress_context(make_progress(opts.progress)) as progress:
            xtr, ytr, xva, yva, val_images = _features(extractor, (train, val), (contract.height, contract.width),
                                                       opts, progress)
            trained = _train(model, (xtr, ytr, xva, yva), len(folder.classes), opts, progress, observe=on_epoch)
    finally:
        extractor.close()
    return Fitted(model, folder.classes, pooled, (len(train), len(xtr), len(val)), (yva, val_images), trained, t0)


def finetune(base: Path, data_dir: Path, out: Path, opts: FinetuneOptions | None = None) -> FinetuneResult:
    """Train a new head (and with ``unfreeze``, the last blocks) for the classes of ``data_dir`` on ``base``;
    write the model to ``out``, and its training report beside it."""
    opts = opts or FinetuneOptions()
    return export(fit(base, data_dir, opts), base, out, opts)


def export(fitted: Fitted, base: Path, out: Path, opts: FinetuneOptions) -> FinetuneResult:
    """Write the fitted model to ``out`` (checked through the runtime) and its report."""
    trained, folder_classes, pooled, yva = fitted.trained, fitted.classes, fitted.pooled, fitted.val[0]
    contract = read_contract(fitted.model, str(base))
    head = trained.head
    version = opts.model_version or "ft-" + hashlib.sha256(head.weights.tobytes()).hexdigest()[:10]
    meta = {"model_name": opts.model_name or out.stem, "model_version": version,
            "base_model_sha256": sha256_file(base), "base_model_name": contract.name or base.stem,
            "feature_tensor": pooled, "precision": "fp32", "unfrozen_blocks": opts.unfreeze}
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(with_head(trained.graph, head, folder_classes, meta), str(out))
    with ModelRuntime(out, RuntimeOptions(device=opts.device)) as runtime:
        if runtime.class_names != list(folder_classes):
            raise DatasetError(f"the exported model {out} reports classes {runtime.class_names}, expected "
                               f"{list(folder_classes)}")
        probs = runtime.probabilities(np.stack(fitted.val[1]))
    exported_acc = float((probs.argmax(axis=1) == yva).mean())
    diff = float(np.abs(probs - trained.deep.val_probabilities).max()) if trained.deep is not None else None
    n_train, n_views, n_val = fitted.split_sizes
    result = FinetuneResult(out, folder_classes, pooled, int(head.weights.shape[0]), n_train, n_views, n_val, head,
                            exported_acc, time.perf_counter() - fitted.started, trained.history, trained.deep, diff)
    files = write_training_report(out, result.as_dict(), opts, folder_classes, (yva, probs))
    log.info("fine-tuned %s: %d classes, val accuracy %.3f (epoch %d of %d), wrote %s and %s", base.name,
             len(folder_classes), exported_acc, head.best_epoch, head.epochs_run, out, files["json"].parent)
    return result
