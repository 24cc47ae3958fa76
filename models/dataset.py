"""Labelled image datasets: the ImageFolder convention, a stratified seeded split, loading to frames.

A dataset is a folder with one sub-folder per class; the sub-folder's name is the class name::

    data/
      gate_open/    0001.jpg 0002.jpg ...
      gate_closed/  0001.jpg ...

Files whose suffix is not an image suffix (``.png .jpg .jpeg .bmp .webp .tif .tiff``) and hidden
entries (``.name``) are ignored. Classes are sorted by name, so class indices are stable.

What is rejected, with a :class:`~pipeline.core.errors.DatasetError` that names the folder or files:

* a folder that does not exist, has no class sub-folders, or only one (a classifier needs two);
* a class folder without any image;
* images that cannot be decoded (all of them are listed, not only the first);
* images smaller than :data:`MIN_SIDE` pixels on a side (nothing to learn from once upscaled);
* with ``strict_sizes=True``, images of different sizes.

**Mixed sizes** are otherwise accepted: every image is resized (squashed, the pipeline's default
``resize`` policy, see :mod:`pipeline.core.preprocess`) to the size asked for, so a model is evaluated and
trained on exactly what the pipeline would feed it. Camera frames of one stream all share a size;
use ``strict_sizes`` (``--strict-sizes``) to catch a folder that mixes cameras or crops by mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.core.errors import DatasetError, ImageError
from pipeline.core.preprocess import IMAGE_SUFFIXES, read_image_rgb, resize

log = logging.getLogger(__name__)

MIN_SIDE = 16
Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class LoadedImages:
    """Decoded, resized images: ``images`` uint8 RGB [N, H, W, 3], ``labels`` int64 [N]."""

    images: Images
    labels: Labels
    paths: tuple[Path, ...]
    classes: tuple[str, ...]
    original_sizes: frozenset[tuple[int, int]]  # (height, width) before resizing


def _listed(items: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass(frozen=True)
class ImageFolder:
    """A labelled image folder: ``classes`` (sorted names) and ``samples`` (path, class index)."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]

    @classmethod
    def scan(cls, root: Path | str) -> ImageFolder:
        """List ``root``'s classes and images; raise :class:`DatasetError` if it is not a usable dataset."""
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DatasetError(f"dataset folder {root} has no class sub-folders: put each class's images in "
                               f"its own folder ({root}/<class name>/*.jpg)")
        if len(class_dirs) == 1:
            raise DatasetError(f"dataset folder {root} has only one class ({class_dirs[0].name!r}); a classifier "
                               "needs at least two class sub-folders")
        samples: list[Sample] = []
        empty: list[str] = []
        for label, folder in enumerate(class_dirs):
            files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(folder).parts))
            if not files:
                empty.append(folder.name)
            samples.extend(Sample(f, label) for f in files)
        if empty:
            raise DatasetError(f"dataset {root}: class folder(s) without images: {_listed(empty)} (images are "
                               f"{', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
        return cls(root, tuple(d.name for d in class_dirs), tuple(samples))

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        labels = np.bincount([s.label for s in self.samples], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, labels, strict=True)}

    def subset(self, indices: Sequence[int]) -> ImageFolder:
        return ImageFolder(self.root, self.classes, tuple(self.samples[i] for i in indices))

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[ImageFolder, ImageFolder]:
        """Stratified, seeded train/validation split: each class keeps ``val_fraction`` for validation.

        Every class gets at least one validation and one training image, so it needs two or more.
        """
        if not 0 < val_fraction < 1:
            raise DatasetError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
        rng = np.random.default_rng(seed)
        train: list[int] = []
        val: list[int] = []
        small = [c for c, n in self.counts().items() if n < 2]
        if small:
            raise DatasetError(f"dataset {self.root}: class(es) {_listed(small)} have fewer than 2 images; a "
                               "train/validation split needs at least 2 per class")
        for label in range(len(self.classes)):
            idx = np.array([i for i, s in enumerate(self.samples) if s.label == label])
            rng.shuffle(idx)
            n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
            val.extend(int(i) for i in idx[:n_val])
            train.extend(int(i) for i in idx[n_val:])
        return self.subset(sorted(train)), self.subset(sorted(val))

    def load(self, size: tuple[int, int], *, strict_sizes: bool = False,
             on_image: Callable[[], None] | None = None) -> LoadedImages:
        """Decode every image as RGB and resize (squash) it to ``size`` = (height, width).

        All problems are collected first, so one error lists every bad file.
        """
        h, w = size
        out = np.zeros((len(self.samples), h, w, 3), dtype=np.uint8)
        unreadable: list[str] = []
        tiny: list[str] = []
        sizes: dict[tuple[int, int], list[Path]] = {}
        for i, sample in enumerate(self.samples):
            rgb = _decode(sample.path)
            if on_image is not None:
                on_image()
            if rgb is None:
                unreadable.append(str(sample.path.relative_to(self.root)))
                continue
            shape = (int(rgb.shape[0]), int(rgb.shape[1]))
            sizes.setdefault(shape, []).append(sample.path)
            if min(shape) < MIN_SIDE:
                tiny.append(f"{sample.path.relative_to(self.root)} ({shape[1]}x{shape[0]})")
                continue
            out[i] = resize(rgb, h, w)
        self._check(unreadable, tiny, sizes, strict_sizes)
        return LoadedImages(out, np.array([s.label for s in self.samples], dtype=np.int64),
                            tuple(s.path for s in self.samples), self.classes, frozenset(sizes))

    def _check(self, unreadable: list[str], tiny: list[str], sizes: dict[tuple[int, int], list[Path]],
               strict_sizes: bool) -> None:
        if unreadable:
            raise DatasetError(f"dataset {self.root}: {len(unreadable)} image(s) cannot be decoded (not an image, "
                               f"truncated or corrupted): {_listed(unreadable)}; fix or delete them")
        if tiny:
            raise DatasetError(f"dataset {self.root}: {len(tiny)} image(s) are smaller than {MIN_SIDE} pixels on "
                               f"a side: {_listed(tiny)}")
        if strict_sizes and len(sizes) > 1:
            by_count = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
            described = [f"{w}x{h} ({len(paths)} image(s), e.g. {paths[0].relative_to(self.root)})"
                         for (h, w), paths in by_count]
            raise DatasetError(f"dataset {self.root}: images have {len(sizes)} different sizes: "
                               f"{_listed(described, 4)}; all images must have one size (strict sizes), or "
                               "drop --strict-sizes to resize them all to the model's input")
        if len(sizes) > 1:
            log.info("dataset %s: %d different image sizes, all resized (squashed) to the model input",
                     self.root, len(sizes))


def _decode(path: Path) -> Images | None:
    try:
        return read_image_rgb(path)
    except (ImageError, OSError):  # unreadable files are reported together by the caller
        return None
