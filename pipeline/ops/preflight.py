"""What a valid config can still get wrong, checked before anything starts.

The config's own validation (:mod:`pipeline.core.config`) knows shapes and values; this module looks
at what they name: that the model, labels, scene map and local video files exist, and that every
``watch`` key of an events sink names a class of the model or one of its scene categories (the
example's ``person`` never fires on ImageNet, which has no such class; ``people`` is a scene
category), that the model may be served at ``inference.precision`` (an int8 model's recorded agreement
with fp32: :mod:`pipeline.inference.precision`), and that each classifier's model carries the classes its
config says and was trained on the serving model. ``vigil config check`` and ``vigil run`` print every
problem at once, each with its place in the config and how to fix it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.class_names import ClassNames, ClassRef, is_wordnet_id, normalize
from pipeline.core.config import EventOptions, MqttSinkConfig, VigilConfig, local_path
from pipeline.core.errors import ConfigError, VigilError
from pipeline.inference.classifiers import check_classifier
from pipeline.inference.contract import load_onnx, read_contract
from pipeline.inference.labels import resolve_labels
from pipeline.inference.model_store import resolve_model_path
from pipeline.inference.precision import precision_problem
from pipeline.inference.scene import load_scene_map


@dataclass(frozen=True)
class Vocabulary:
    """What a watch key can name: the model's classes and its scene categories."""

    model: Path
    classes: ClassNames
    scenes: tuple[str, ...]
    metadata: dict[str, str]  # the model's metadata_props


def missing_files(cfg: VigilConfig) -> list[str]:
    """A problem for each file the config names that does not exist (the model is :func:`vocabulary`'s)."""
    problems = []
    for i, stream in enumerate(cfg.streams):
        path = local_path(stream.url)
        if path is not None and not path.exists():
            problems.append(f"streams[{i}].url ({stream.id}): no video file {path}; fix the path (relative "
                            "paths are relative to the config file's folder)")
    for i, sink in enumerate(cfg.sinks):
        tls = sink.tls if isinstance(sink, MqttSinkConfig) else None
        for key, value in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)) \
                if tls is not None else ():
            if value is not None and not Path(value).is_file():
                problems.append(f"sinks[{i}].tls.{key}: no file {value}")
    inf = cfg.inference
    for key, value in (("labels", inf.labels), ("scene_map", inf.scene_map), ("scene_model", inf.scene_model)):
        if value is not None and not Path(value).is_file():
            problems.append(f"inference.{key}: no file {value}")
    return problems


def vocabulary(cfg: VigilConfig) -> Vocabulary:
    """Load the model's class names and scene categories as the runtime would (no session is created)."""
    inf = cfg.inference
    path = resolve_model_path(inf.model)
    if not path.is_file():
        raise ConfigError(f"inference.model: no model file {path}; give a path that exists, or `vigil run "
                          "--model PATH`")
    contract = read_contract(load_onnx(path), str(path))
    names = resolve_labels(contract, path, Path(inf.labels) if inf.labels else None)
    if inf.scene_model is not None:
        scene_path = Path(inf.scene_model)
        scene_contract = read_contract(load_onnx(scene_path), str(scene_path))
        scenes = tuple(resolve_labels(scene_contract, scene_path, None))
    else:
        imagenet = contract.num_classes == 1000 or (contract.num_classes == 1001 and contract.background_class == 0)
        scene_map = Path(inf.scene_map) if inf.scene_map else None
        scenes = load_scene_map(scene_map, names, contract.background_class).categories \
            if scene_map is not None or imagenet else ()
    return Vocabulary(path, ClassNames(names), scenes, contract.metadata)


def watch_problems(cfg: VigilConfig, vocab: Vocabulary) -> list[str]:
    """A problem for each ``watch`` key that names no class of the model and no scene category."""
    problems = []
    scenes = {normalize(s) for s in vocab.scenes}
    for i, sink in enumerate(cfg.sinks):
        if not isinstance(sink, EventOptions):
            continue
        for key in sink.watch:
            ref = ClassRef.parse(key)
            if ref.index is None and ref.key in scenes:
                continue
            found = vocab.classes.find(key)
            if len(found) == 1 and is_wordnet_id(key):  # results carry index and name, not WordNet ids
                problems.append(f"sinks[{i}].watch.{key}: write the class as "
                                f"{vocab.classes.index_form(found[0])!r} (results carry no WordNet ids)")
            elif len(found) != 1:
                scene_hint = f"; scene categories: {', '.join(vocab.scenes)}" if vocab.scenes else ""
                problems.append(f"sinks[{i}].watch.{key} (model {vocab.model.name}): "
                                f"{vocab.classes.explain(key, wordnet=False)}{scene_hint}")
    return problems


def classifier_problems(cfg: VigilConfig, serving: Path) -> list[str]:
    """A problem for each classifier whose model is missing, is not a classifier, carries other classes than its
    config says, or was trained on another serving model (:func:`pipeline.inference.classifiers.check_classifier`)."""
    problems = []
    serving_sha256 = hashlib.sha256(serving.read_bytes()).hexdigest() if cfg.classifiers else ""
    for i, c in enumerate(cfg.classifiers):
        path = Path(c.model)
        if not path.is_file():
            problems.append(f"classifiers[{i}].model ({c.id}): no model file {path}; train one with `vigil models "
                            "finetune` or fix the path (relative paths are relative to the config file's folder)")
            continue
        try:
            check_classifier(c, i, load_onnx(path), serving_sha256)
        except VigilError as exc:
            problems.append(str(exc))
    return problems


def preflight(cfg: VigilConfig, source: str | None = None) -> list[str]:
    """Every problem :func:`missing_files`, :func:`watch_problems` and :func:`classifier_problems` find; the model's
    is one of them, and so is its precision's (``source``: the config file, for the `vigil models quantize`
    command to suggest)."""
    problems = missing_files(cfg)
    try:
        vocab = vocabulary(cfg)
    except ConfigError as exc:
        return [*problems, str(exc)]
    except VigilError as exc:  # the model or its labels cannot be used: say so; the watch check needs them
        return [*problems, f"inference.model: {exc}"]
    precision = precision_problem(vocab.model, vocab.metadata, cfg.inference, source)
    if precision is not None:
        problems.append(f"inference.precision: {precision}")
    return problems + watch_problems(cfg, vocab) + classifier_problems(cfg, vocab.model)


def check(cfg: VigilConfig, source: str) -> None:
    """Raise :class:`ConfigError` with every :func:`preflight` problem of ``cfg`` (read from ``source``)."""
    problems = preflight(cfg, source)
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems), problems)
