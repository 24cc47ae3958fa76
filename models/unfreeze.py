"""`vigil models finetune --unfreeze N`: the last N inverted-residual blocks trained with the head.

1. The graph is cut at the input of the block of the N-th last depthwise convolution (each
   inverted-residual block has exactly one; its input is where only one tensor is live): the
   *prefix* stays frozen and runs in onnxruntime once per training view, its activations cached,
   so an epoch costs only the tail.
2. The *tail* (the N blocks, the last 1x1 convolution and the pooling) runs in PyTorch (on the GPU with
   ``--device cuda`` or ``auto`` when PyTorch sees one)
   (:class:`models.onnx_torch.OnnxStretch`), a new linear head on top, started from the head-only
   solution (a linear probe: :func:`models.head.train_head` on the tail's own features, which is
   also the baseline the report compares with); AdamW with a lower learning rate for the blocks than
   for the head, early stopping on the validation loss, the best epoch kept.
3. Export: the original graph with the tail's trained weights written back into its initializers and
   the new head (:func:`models.graph.with_head`): same operators and input contract, class names in
   the metadata; the exported model's outputs are compared with the torch model's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from models.graph import needed_nodes
from models.head import F32, FinetuneOptions, Head, History, Labels, familiarity, train_head
from models.onnx_torch import OnnxStretch, torch  # torch through onnx_torch: one clear error without it
from pipeline.core.errors import ModelContractError


@dataclass(frozen=True)
class Split:
    cut: str  # the tensor between the frozen prefix and the trained tail
    tail: list[onnx.NodeProto]
    blocks: int  # inverted-residual blocks in the whole graph


@dataclass(frozen=True)
class DeepResult:
    unfrozen_blocks: int
    head: Head  # the exported head (weights [features, classes])
    probe: Head  # the head-only solution on the same split (the baseline)
    history: History
    initializers: dict[str, np.ndarray]  # trained tail weights by ONNX initializer name
    val_probabilities: F32  # of the torch model at its best epoch (the export is checked against them)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"unfrozen_blocks": self.unfrozen_blocks, "head_only_val_accuracy": self.probe.val_accuracy,
                "head_only_val_loss": self.probe.val_loss,
                "trained_parameters": int(sum(v.size for v in self.initializers.values()) + self.head.weights.size
                                          + self.head.bias.size),
                "tail_seconds": self.seconds}


def _is_depthwise(node: onnx.NodeProto) -> bool:
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)


def split_for(model: onnx.ModelProto, pooled: str, unfreeze: int) -> Split:
    """Where to cut ``model`` so the tail holds its last ``unfreeze`` blocks (see the module's docstring)."""
    nodes = needed_nodes(model, pooled)
    inits = {t.name for t in model.graph.initializer}
    depthwise = [i for i, n in enumerate(nodes) if _is_depthwise(n)]
    if not 1 <= unfreeze < len(depthwise):  # the first block stays frozen with the stem and the input's scaling
        raise ModelContractError(f"--unfreeze {unfreeze}: this model has {len(depthwise)} inverted-residual blocks "
                                 f"(one depthwise convolution each); unfreeze 1 to {len(depthwise) - 1} of them")
    first = nodes[depthwise[len(depthwise) - unfreeze]]
    cut = _block_input(nodes, first)
    cut_at = next(i for i, n in enumerate(nodes) if cut in n.output)
    # A block boundary: nothing computed before it is needed after it, but the cut tensor itself.
    needed_later = {t for n in nodes[cut_at + 1:] for t in n.input if t not in inits}
    produced_before = {o for n in nodes[:cut_at + 1] for o in n.output}
    if needed_later & produced_before != {cut}:  # pragma: no cover - every MobileNetV2 block starts at one tensor
        raise ModelContractError(f"--unfreeze {unfreeze}: no single tensor separates the frozen blocks from the rest")
    return Split(cut, nodes[cut_at + 1:], len(depthwise))


def _block_input(nodes: list[onnx.NodeProto], depthwise: onnx.NodeProto) -> str:
    """The input of the block whose depthwise convolution this is: before its 1x1 expansion (and activation)
    when it has one (every block but the first), else the depthwise convolution's own input."""
    producer = {o: n for n in nodes for o in n.output}
    tensor = depthwise.input[0]
    act = producer.get(tensor)
    if act is not None and act.op_type in ("Clip", "Relu"):
        expand = producer.get(act.input[0])
        if expand is not None and expand.op_type == "Conv" and not _is_depthwise(expand):
            return str(expand.input[0])
    return str(tensor)


class _Net(torch.nn.Module):
    def __init__(self, tail: OnnxStretch, probe: Head) -> None:
        super().__init__()
        self.tail = tail
        self.head = torch.nn.Linear(probe.weights.shape[0], probe.weights.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(probe.weights.T.copy()))
            self.head.bias.copy_(torch.from_numpy(probe.bias.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.tail(x).flatten(1))
        return logits


def pooled_features(tail: OnnxStretch, acts: F32, batch: int = 64) -> F32:
    with torch.no_grad():
        return np.concatenate([tail(torch.from_numpy(acts[i:i + batch])).flatten(1).numpy()
                               for i in range(0, len(acts), batch)]).astype(np.float32)


def _on(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def training_device(requested: str) -> str:
    """``cuda`` when asked for (or ``auto``) and PyTorch sees a GPU, else ``cpu``."""
    return "cuda" if requested in ("cuda", "auto") and torch.cuda.is_available() else "cpu"


def _epoch(net: _Net, opt: torch.optim.Optimizer, data: tuple[F32, Labels], batch: int,
           rng: np.random.Generator) -> tuple[float, float]:
    x, y = data
    net.train()
    total, correct, n = 0.0, 0, 0
    order = rng.permutation(len(x))
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        xb, yb = torch.from_numpy(x[idx]).to(_on(net)), torch.from_numpy(y[idx]).to(_on(net))
        logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        total += float(loss.item()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        n += len(idx)
    return total / n, correct / n


def evaluate(net: _Net, x: F32, y: Labels, batch: int = 64) -> tuple[float, float, F32]:
    """Validation loss, accuracy and probabilities."""
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(torch.from_numpy(x[i:i + batch]).to(_on(net))) for i in range(0, len(x), batch)])
        loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).to(_on(net))))
        probs = torch.softmax(logits, 1).cpu().numpy().astype(np.float32)
    return loss, float((probs.argmax(1) == y).mean()), probs


def train_tail(model: onnx.ModelProto, split: Split, data: tuple[tuple[F32, Labels], tuple[F32, Labels]], k: int,
               opts: FinetuneOptions, *, on_epoch: Callable[[int, float, float], None] | None = None) -> DeepResult:
    """Linear probe, then the tail and head together (see the module's docstring)."""
    t0 = time.perf_counter()
    train, val = data
    torch.manual_seed(opts.seed)
    tail = OnnxStretch(model, split.tail, split.cut, split.tail[-1].output[0])
    probe = train_head((pooled_features(tail, train[0]), train[1]), (pooled_features(tail, val[0]), val[1]), k,
                       opts)
    net = _Net(tail, probe).to(training_device(opts.device))
    opt = torch.optim.AdamW([{"params": net.tail.parameters(), "lr": opts.learning_rate * opts.backbone_lr_ratio},
                             {"params": net.head.parameters(), "lr": opts.learning_rate}],
                            weight_decay=opts.weight_decay)
    rng, history = np.random.default_rng(opts.seed), History()
    best: tuple[float, int, dict[str, Any]] = (np.inf, 0, copy.deepcopy(net.state_dict()))
    for epoch in range(1, opts.deep_epochs + 1):
        loss, acc = _epoch(net, opt, train, opts.batch_size, rng)
        val_loss, val_acc, _ = evaluate(net, *val)
        history.add((loss, acc), (val_loss, val_acc))
        if on_epoch is not None:
            on_epoch(epoch, val_loss, val_acc)
        if val_loss < best[0] - 1e-5:
            best = (val_loss, epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= opts.deep_patience:
            break
    net.load_state_dict(best[2])
    val_loss, val_acc, probs = evaluate(net, *val)
    net.to("cpu")  # the trained tail's own features, for the head's familiarity
    head = Head(net.head.weight.detach().numpy().T.astype(np.float32).copy(),
                net.head.bias.detach().numpy().astype(np.float32).copy(), best[1], len(history.val_loss), val_acc,
                val_loss, familiarity(pooled_features(net.tail, train[0]), train[1], k))
    return DeepResult(opts.unfreeze, head, probe, history, tail.trained_initializers(), probs,
                      time.perf_counter() - t0)


def with_trained_tail(model: onnx.ModelProto, split: Split, initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose tail uses the trained weights; an initializer the frozen part shares is copied
    for the tail, so the frozen part keeps its own."""
    new = copy.deepcopy(model)
    tail_outputs = {o for n in split.tail for o in n.output}
    frozen_uses = {i for n in model.graph.node if not set(n.output) & tail_outputs for i in n.input}
    by_name = {t.name: t for t in new.graph.initializer}
    renamed: dict[str, str] = {}
    for name, value in initializers.items():
        if name in frozen_uses:
            renamed[name] = f"{name}__vigil_tuned"
            new.graph.initializer.append(numpy_helper.from_array(value, renamed[name]))
        else:
            by_name[name].CopyFrom(numpy_helper.from_array(value, name))
    for node in new.graph.node:
        if set(node.output) & tail_outputs:
            for j, name in enumerate(node.input):
                if name in renamed:
                    node.input[j] = renamed[name]
    return new
