"""The configured classifiers (``classifiers:``), loaded beside one serving model.

Each classifier's model is checked when it loads: its classes (the labels it carries) must be the config's,
in order, and a head or tail trained by ``vigil models finetune`` must have been trained on this serving
model (its recorded ``base_model_sha256``). Then a classifier that shares the serving model's backbone is
grafted onto it (:mod:`pipeline.inference.graft`): the merged model gives its answer in the same run, the
backbone computed once per crop. A head written with its familiarity (:class:`models.head.Familiarity`:
how close a crop's features are to what it was trained on) has its scores weighed by it, so a crop unlike
anything it learned (a covered lens) scores low and a ``state`` classifier says ``unknown``. Any other
classifier runs as a model of its own, on the crops of the cameras and zones it is configured for only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnx

from pipeline.core.classification import ClassifierAnswers
from pipeline.core.config import ClassifierConfig
from pipeline.core.errors import ModelContractError
from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.graft import FAMILIARITY, OwnPart, graft, own_part
from pipeline.inference.labels import resolve_labels

Frames = npt.NDArray[np.uint8]
Probs = npt.NDArray[np.float32]
Where = Sequence[tuple[str, str]]  # per crop: its camera and zone


class OwnModel(Protocol):
    """A classifier that runs as a model of its own (a :class:`pipeline.inference.runtime.ModelRuntime`)."""

    def probabilities(self, frames: Frames) -> Probs: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LoadedClassifier:
    config: ClassifierConfig
    class_names: tuple[str, ...]
    logits: bool  # its output is logits (softmax applied here), not probabilities
    model: OwnModel | None  # None: grafted onto the serving model
    familiar: bool = False  # grafted with a familiarity output (models.head.Familiarity): scores are weighed by it


def _softmax(x: Probs) -> Probs:
    z: Probs = np.exp(x - x.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    return z


def check_classifier(cfg: ClassifierConfig, index: int, model: onnx.ModelProto,
                     serving_sha256: str) -> tuple[tuple[str, ...], bool]:
    """The classifier's class names and whether it outputs logits; ModelContractError naming the key and the fix
    when its classes are not the config's or it was trained on another serving model."""
    where = f"classifiers[{index}] ({cfg.id}): {cfg.model}"
    contract = read_contract(model, where)
    names = tuple(resolve_labels(contract, Path(cfg.model), None))
    if list(names) != cfg.classes:
        raise ModelContractError(f"{where}: the model's classes are {list(names)}, classifiers[{index}].classes says "
                                 f"{cfg.classes}; write the model's classes, in its order")
    base = contract.metadata.get("base_model_sha256", "")
    if base and serving_sha256 and base != serving_sha256:
        raise ModelContractError(
            f"{where}: trained on another serving model (base sha256 {base[:12]}…, the serving model is "
            f"{serving_sha256[:12]}…); retrain it with `vigil models finetune --model <the serving model>`")
    return names, contract.output_kind == "logits"


class ClassifierSet:
    """The classifiers of one serving model: ``answers`` turns a run's extra outputs into each one's answers."""

    def __init__(self, loaded: list[LoadedClassifier], grafted_outputs: dict[str, tuple[str, ...]]) -> None:
        self.loaded = loaded
        self.grafted_outputs = grafted_outputs  # classifier id -> its outputs in the merged model

    @classmethod
    def load(cls, configs: Sequence[ClassifierConfig], serving: onnx.ModelProto, serving_sha256: str,
             open_own: Callable[[Path], OwnModel]) -> tuple[ClassifierSet, onnx.ModelProto | None]:
        """Check and load ``configs``; and the serving model with the grafted ones (None when none is)."""
        loaded: list[LoadedClassifier] = []
        parts: dict[str, OwnPart] = {}
        try:
            for i, cfg in enumerate(configs):
                model = load_onnx(Path(cfg.model))
                names, logits = check_classifier(cfg, i, model, serving_sha256)
                part = own_part(serving, model)
                if part is not None:
                    parts[cfg.id] = part
                own = None if part is not None else open_own(Path(cfg.model))
                familiar = part is not None and len(part.outputs) > 1 and part.outputs[1] == FAMILIARITY
                loaded.append(LoadedClassifier(cfg, names, logits, own, familiar))
        except BaseException:
            for c in loaded:
                if c.model is not None:
                    c.model.close()
            raise
        merged, outputs = graft(serving, parts) if parts else (None, {})
        return cls(loaded, outputs), merged

    @property
    def extra_outputs(self) -> list[str]:
        """The merged model's outputs after the serving model's, in the order :meth:`answers` takes them."""
        return [o for c in self.loaded if c.model is None
                for o in self.grafted_outputs[c.config.id][:2 if c.familiar else 1]]

    def answers(self, extra: list[Probs], frames: Frames, where: Where | None,
                run_seconds: float = 0.0) -> dict[str, ClassifierAnswers]:
        """Each classifier's answers for ``frames`` (crops), given the merged run's ``extra`` outputs (which took
        ``run_seconds``); a crop of a camera or zone a classifier is not configured for gets no answer from it
        (-1)."""
        out: dict[str, ClassifierAnswers] = {}
        grafted = iter(extra)
        n = len(frames)
        for c in self.loaded:
            mask = np.array([c.config.runs_on(cam, zone) for cam, zone in where], bool) if where is not None \
                else np.ones(n, bool)
            t0, seconds = time.perf_counter(), run_seconds
            if c.model is None:
                probs = next(grafted)
                if c.familiar:  # a crop unlike what it was trained on scores near 0, whatever its class
                    probs = (_softmax(probs) if c.logits else probs) * next(grafted)
            elif mask.any():
                probs = np.zeros((n, len(c.class_names)), np.float32)
                probs[mask] = c.model.probabilities(np.ascontiguousarray(frames[mask]))
                seconds = time.perf_counter() - t0
            else:
                probs = np.zeros((n, len(c.class_names)), np.float32)
            if c.logits and c.model is None and not c.familiar:
                probs = _softmax(probs)
            ids = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
            scores = probs[np.arange(n), ids].astype(np.float32) if n else np.zeros(0, np.float32)
            ids[~mask] = -1
            out[c.config.id] = ClassifierAnswers(ids, scores, c.class_names, seconds)
        return out

    def close(self) -> None:
        for c in self.loaded:
            if c.model is not None:
                c.model.close()
