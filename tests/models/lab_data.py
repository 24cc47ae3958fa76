"""Datasets for the model-lab tests, built in tmp folders from the shared photographs and videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.fixtures.media import decode_all

SEGMENT_CLASSES = ("cat", "bird", "parrot", "hotdog", "grace_hopper")  # slideshow.mp4, 2 s each


def photo_dataset(images_dir: Path, expected: dict[str, Any], root: Path) -> Path:
    """One class folder per photograph, named by the model's expected top-1 label."""
    for name, info in expected.items():
        folder = root / info["top1_label"]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(images_dir / name, folder / name)
    return root


def video_frames(path: Path) -> list[np.ndarray]:
    frames = decode_all(path)
    assert frames, f"no frame decoded from {path}"
    return frames


def video_dataset(video_dir: Path, root: Path, per_class: int = 15) -> Path:
    """cat/bird/parrot/hotdog/grace_hopper from the slideshow's segments, and bikes: ``per_class`` frames each.

    Frames within 3 of a cut are skipped; the rest are sampled evenly. Saved as JPEG at the
    videos' own (different) sizes.
    """
    slides = video_frames(video_dir / "slideshow.mp4")
    seg = len(slides) // len(SEGMENT_CLASSES)
    groups = {name: slides[i * seg + 3:(i + 1) * seg - 3] for i, name in enumerate(SEGMENT_CLASSES)}
    groups["bikes"] = video_frames(video_dir / "bikes.mp4")
    for name, frames in groups.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in np.linspace(0, len(frames) - 1, per_class).round().astype(int):
            assert cv2.imwrite(str(folder / f"{name}_{j:03d}.jpg"), frames[j])
    return root


def slideshow_labels(video_dir: Path) -> list[str]:
    return [s["expected_top1"] for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]]


def noisy_frames_task(video_dir: Path, root: Path, sigma: float = 6.0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Clean frames against the same frames with sensor noise (Gaussian, ``sigma`` grey levels), both videos,
    at the model's input size (PNG: lossless, so the noise stays). The videos are cut in runs of 10 frames;
    every fourth run is held out (RGB images and labels returned; never in the training folder, so never in
    its validation split either), the rest is the training folder (every third frame)."""
    rng = np.random.default_rng(0)

    def noisy(f: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(f.astype(np.float32) + rng.normal(0, sigma, f.shape), 0, 255), dtype=np.uint8)

    train, held = [], []
    for name in ("bikes.mp4", "slideshow.mp4"):
        frames = [cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA) for f in video_frames(video_dir / name)]
        train += [f for i, f in enumerate(frames) if (i // 10) % 4 != 3][::3]
        held += [f for i, f in enumerate(frames) if (i // 10) % 4 == 3 and i % 10 in (3, 6)]
    for cls, make in (("clean", lambda f: f), ("noisy", noisy)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for j, f in enumerate(train):
            assert cv2.imwrite(str(root / cls / f"{j:03d}.png"), make(f))
    images = [cv2.cvtColor(make(f), cv2.COLOR_BGR2RGB) for make in (lambda f: f, noisy) for f in held]
    return root, np.stack(images), np.array([0] * len(held) + [1] * len(held))  # classes by name: clean, noisy
