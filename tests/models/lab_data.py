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
