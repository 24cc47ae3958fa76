"""Relative paths in a config file are relative to the file's folder, not to the current directory.

``vigil run --config site/vigil.yaml`` from another folder must find ``site/model.onnx`` when the file
says ``model: model.onnx``, as every tool that reads a config file does (Docker Compose, Prometheus'
``rule_files``). :func:`pipeline.core.config.loader.load_config` applies this; a config validated from a
mapping (tests, ``vigil demo``) has no folder and is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config.schema import VigilConfig
from pipeline.core.config.sinks import EventsSinkConfig, JsonlSinkConfig, MqttSinkConfig, SinkConfig

FILE_SINKS = (JsonlSinkConfig, EventsSinkConfig)  # the sinks that write a file (``path``)


def _anchored(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def is_local_file(url: str) -> bool:
    """A bare path to a video file (not a URL, not a video device)."""
    return "://" not in url and not url.startswith("/dev/video")


def local_path(url: str) -> Path | None:
    """The file a source URL names (``file://`` or a bare path), or None for a network stream or device."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return Path(url) if is_local_file(url) else None


def _anchor_sink(sink: SinkConfig, base: Path) -> SinkConfig:
    if isinstance(sink, FILE_SINKS):
        return sink.model_copy(update={"path": _anchored(sink.path, base)})
    if isinstance(sink, MqttSinkConfig) and sink.tls is not None:
        tls = sink.tls
        return sink.model_copy(update={"tls": tls.model_copy(update={
            "ca_file": _anchored(tls.ca_file, base), "cert_file": _anchored(tls.cert_file, base),
            "key_file": _anchored(tls.key_file, base)})})
    return sink


def anchor_paths(cfg: VigilConfig, base: Path) -> VigilConfig:
    """``cfg`` with every relative file path (model, labels, scene map and model, TensorRT cache, local
    video files, sink files, classifiers' models) taken relative to ``base``."""
    inf = cfg.inference
    inference = inf.model_copy(update={
        "model": _anchored(inf.model, base), "labels": _anchored(inf.labels, base),
        "scene_map": _anchored(inf.scene_map, base), "scene_model": _anchored(inf.scene_model, base),
        "gpu": inf.gpu.model_copy(update={"tensorrt_cache_dir": _anchored(inf.gpu.tensorrt_cache_dir, base)})})
    streams = [s.model_copy(update={"url": _anchored(s.url, base)}) if is_local_file(s.url) else s
               for s in cfg.streams]
    sinks = [_anchor_sink(s, base) for s in cfg.sinks]
    classifiers = [c.model_copy(update={"model": _anchored(c.model, base)}) for c in cfg.classifiers]
    return cfg.model_copy(update={"inference": inference, "streams": streams, "sinks": sinks,
                                  "classifiers": classifiers})
