"""The softmax head every fine-tune trains, and what :mod:`models.finetune` and :mod:`models.unfreeze` share.

The options, the per-epoch history and the head (softmax regression on standardised features, Adam, early
stopping on the validation loss, the standardisation folded into its weights) live here, below both: the
head-only path and ``--unfreeze`` (which starts its new head from this one, a linear probe) use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline.inference.runtime import softmax

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FinetuneOptions:
    val_fraction: float = 0.2
    seed: int = 0
    augment_copies: int = 2  # augmented versions of each training image, besides the clean one
    augment_strength: float = 1.0  # 0-1: how far the crops and colour jitter go (see augment)
    epochs: int = 300
    patience: int = 25
    unfreeze: int = 0  # inverted-residual blocks trained with the head (0: the head only, no PyTorch)
    backbone_lr_ratio: float = 0.1  # the blocks' learning rate, as a share of the head's
    deep_epochs: int = 30  # most passes with --unfreeze (each trains the blocks too)
    deep_patience: int = 6
    learning_rate: float = 0.001
    weight_decay: float = 1e-3
    batch_size: int = 64
    model_name: str | None = None
    model_version: str | None = None
    device: str = "cpu"
    strict_sizes: bool = False
    progress: bool = True


@dataclass
class History:
    """Per epoch, for the training report."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def add(self, train: tuple[float, float], val: tuple[float, float]) -> None:
        self.train_loss.append(train[0])
        self.train_accuracy.append(train[1])
        self.val_loss.append(val[0])
        self.val_accuracy.append(val[1])


#: The least cosine distance a head tolerates from its classes' mean features (training views that all look
#: alike would otherwise make any other view of the same scene unfamiliar).
FAMILIAR_FLOOR = 0.05


@dataclass(frozen=True)
class Familiarity:
    """How far a crop's features may be from what the head was trained on before its answer fades.

    ``centroids``: each class's mean training feature vector, unit length, as columns [features, classes];
    ``distance``: the cosine distance to the nearest centroid that 99% of the training views stay within (at least
    :data:`FAMILIAR_FLOOR`). The exported model's ``familiarity`` output is ``sigmoid(4 * (2 - d / distance))`` for
    a crop at distance ``d``: 0.98 at ``distance``, 0.5 at twice it, 0.02 at three times. A covered lens or a view
    the head never saw scores near 0, so a ``state`` classifier says ``unknown`` instead of a guess.
    """

    centroids: F32
    distance: float


def familiarity(x: F32, y: Labels, k: int) -> Familiarity:
    """The :class:`Familiarity` of training features ``x`` [N, D] with labels ``y`` in ``range(k)``."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    means = np.stack([unit[y == c].mean(axis=0) for c in range(k)])
    centroids = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).T.astype(np.float32)
    distances = 1.0 - (unit @ centroids).max(axis=1)
    return Familiarity(centroids, max(float(np.quantile(distances, 0.99)), FAMILIAR_FLOOR))


@dataclass(frozen=True)
class Head:
    weights: F32  # [features, classes], standardisation folded in
    bias: F32  # [classes]
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    val_loss: float
    familiarity: Familiarity | None = None  # set by the fine-tune from the training features


def _loss_grad(x: F32, y: Labels, w: F32, b: F32, wd: float) -> tuple[float, F32, F32]:
    p = softmax(x @ w + b)
    n = len(x)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean() + wd * float((w * w).sum()))
    p[np.arange(n), y] -= 1
    p /= n
    return loss, (x.T @ p + 2 * wd * w).astype(np.float32), p.sum(axis=0).astype(np.float32)


def train_head(train: tuple[F32, Labels], val: tuple[F32, Labels], k: int, opts: FinetuneOptions, *,
               on_epoch: Callable[[int, float, float], None] | None = None, history: History | None = None) -> Head:
    """Softmax regression on standardised features with Adam and early stopping on validation loss."""
    (xtr, ytr), (xva, yva) = train, val
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
    ztr, zva = (xtr - mu) / sd, (xva - mu) / sd
    rng = np.random.default_rng(opts.seed)
    w = np.zeros((xtr.shape[1], k), np.float32)
    b = np.zeros(k, np.float32)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    best = (np.inf, 0.0, w.copy(), b.copy(), 0)
    step = epoch = 0
    for epoch in range(1, opts.epochs + 1):
        order = rng.permutation(len(ztr))
        for i in range(0, len(order), opts.batch_size):
            idx = order[i:i + opts.batch_size]
            _, gw, gb = _loss_grad(ztr[idx], ytr[idx], w, b, opts.weight_decay)
            step += 1
            for j, (param, g) in enumerate(((w, gw), (b, gb))):
                m[j] = 0.9 * m[j] + 0.1 * g
                v[j] = 0.999 * v[j] + 0.001 * g * g
                np.subtract(param, opts.learning_rate * (m[j] / (1 - 0.9 ** step))
                            / (np.sqrt(v[j] / (1 - 0.999 ** step)) + 1e-8), out=param)
        val_loss, _, _ = _loss_grad(zva, yva, w, b, 0.0)
        val_acc = float(((zva @ w + b).argmax(axis=1) == yva).mean())
        if history is not None:
            history.add((_loss_grad(ztr, ytr, w, b, 0.0)[0], float(((ztr @ w + b).argmax(axis=1) == ytr).mean())),
                        (val_loss, val_acc))
        if on_epoch is not None:
            on_epoch(epoch, val_loss, val_acc)
        if val_loss < best[0] - 1e-5:
            best = (val_loss, val_acc, w.copy(), b.copy(), epoch)
        elif epoch - best[4] >= opts.patience:
            break
    loss, acc, bw, bb, best_epoch = best
    folded_w = (bw / sd[:, None]).astype(np.float32)
    folded_b = (bb - (mu / sd) @ bw).astype(np.float32)
    return Head(folded_w, folded_b, best_epoch, epoch, acc, float(loss))
