"""Frames of the user's own scenes, as the pipeline would feed them to the model (calibration, checks).

A source is an image folder (what `vigil capture` writes, or a labelled dataset: images are found in
sub-folders too, sorted by path, so a capture folder's are in time order), a video file, or a configured
camera (its stream's transport and resize policy, the ``ingest:`` timeouts). Every frame is decoded as RGB
and resized to the model's input as ingest does (:func:`pipeline.core.preprocess.resize`, the stream's
policy; ``squash`` for folders and files), keeping every ``every``-th frame up to ``max_frames``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.core.config import StreamConfig, VigilConfig
from pipeline.core.errors import ImageError, SourceError
from pipeline.core.preprocess import IMAGE_SUFFIXES, bgr_to_rgb, read_image_rgb, resize
from pipeline.ingest.source import SourceOptions, VideoSource

Frames = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FrameSet:
    """``frames``: uint8 RGB [N, H, W, 3] of one source, in its order (time order for videos and cameras)."""

    name: str
    frames: Frames


@dataclass(frozen=True)
class Sampling:
    size: tuple[int, int]  # (height, width): the model's input
    max_frames: int = 300  # per source
    every: int = 1  # keep every n-th frame


def _stack(frames: list[Frames], sampling: Sampling) -> Frames:
    h, w = sampling.size
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), dtype=np.uint8)


def _folder(path: Path, sampling: Sampling) -> FrameSet:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise ImageError(f"folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
    h, w = sampling.size
    picked = files[::sampling.every][:sampling.max_frames]
    return FrameSet(str(path), _stack([resize(read_image_rgb(f), h, w) for f in picked], sampling))


def _read(source: VideoSource) -> Iterator[Frames]:
    """BGR frames until the source ends (a file's end is a SourceError from a non-looping source)."""
    while True:
        try:
            raw = source.read()
        except SourceError as exc:
            if exc.reason == "end of file":
                return
            raise
        if raw is None:
            return
        yield raw.bgr


def _video(opts: SourceOptions, name: str, policy: str, sampling: Sampling) -> FrameSet:
    h, w = sampling.size
    frames: list[Frames] = []
    with VideoSource(opts) as source:
        for i, bgr in enumerate(_read(source)):
            if i % sampling.every == 0:
                frames.append(bgr_to_rgb(resize(bgr, h, w, policy)))
            if len(frames) >= sampling.max_frames:
                break
    if not frames:
        raise SourceError(f"{name}: no frame could be read", "no frame")
    return FrameSet(name, _stack(frames, sampling))


def from_path(path: Path, sampling: Sampling) -> FrameSet:
    """Frames of an image folder or a video file (an image file alone is a folder of one: use its folder)."""
    if path.is_dir():
        return _folder(path, sampling)
    if not path.is_file():
        raise SourceError(f"{path} is neither an image folder nor a video file", "no such file", permanent=True)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ImageError(f"{path} is one image; give the folder of images it is in (calibration needs many)")
    return _video(SourceOptions(url=str(path), paced=False), str(path), "squash", sampling)


def from_camera(cfg: VigilConfig, stream: StreamConfig, sampling: Sampling) -> FrameSet:
    """Frames of a configured camera, opened and resized as ingest does; a looping file is read once."""
    opts = SourceOptions.from_config(stream, cfg.ingest)
    opts = SourceOptions(url=opts.url, transport=opts.transport, keyframes_only=opts.keyframes_only, loop=False,
                         paced=False, open_timeout_s=opts.open_timeout_s, read_timeout_s=opts.read_timeout_s)
    return _video(opts, stream.id, stream.resize, sampling)


def from_config(cfg: VigilConfig, stream_ids: list[str], sampling: Sampling) -> list[FrameSet]:
    """Frames of the config's cameras (``stream_ids``, or all), one set each."""
    from models.capture import find_stream

    streams = [find_stream(cfg, s) for s in stream_ids] if stream_ids else list(cfg.streams)
    return [from_camera(cfg, s, sampling) for s in streams]

