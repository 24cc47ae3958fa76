"""ImageFolder datasets: scanning, the stratified seeded split, loading, and clear errors for bad folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.dataset import MIN_SIDE, ImageFolder
from pipeline.core.errors import DatasetError
from tests.cli_helpers import vigil


def _image(path: Path, h: int = 40, w: int = 60, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2, : w // 2] = (0, 0, 255)  # BGR red in the top-left corner
    assert cv2.imwrite(str(path), img)
    return path


def _dataset(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(n):
            _image(root / name / f"{i:03d}.png", value=10 * i)
    return root


def test_scan_sorts_classes_and_ignores_other_files(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", {"b_dock": 3, "a_gate": 2})
    (root / "a_gate" / "notes.txt").write_text("not an image")
    (root / "a_gate" / ".hidden.png").write_bytes(b"junk")
    (root / ".thumbnails").mkdir()
    (root / "README.md").write_text("top-level files are not classes")
    folder = ImageFolder.scan(root)
    assert folder.classes == ("a_gate", "b_dock")
    assert folder.counts() == {"a_gate": 2, "b_dock": 3}
    assert {s.label for s in folder.samples if s.path.parent.name == "b_dock"} == {1}


def test_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    folder = ImageFolder.scan(_dataset(tmp_path / "d", {"a": 10, "b": 20, "c": 2}))
    train, val = folder.split(0.2, seed=1)
    assert val.counts() == {"a": 2, "b": 4, "c": 1}  # every class in validation, in proportion
    assert train.counts() == {"a": 8, "b": 16, "c": 1}
    paths = [s.path for s in train.samples] + [s.path for s in val.samples]
    assert sorted(paths) == sorted(s.path for s in folder.samples)  # disjoint, complete
    again = folder.split(0.2, seed=1)[1]
    other = folder.split(0.2, seed=2)[1]
    assert again.samples == val.samples
    assert other.samples != val.samples


def test_load_resizes_mixed_sizes_to_the_model_input(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _image(root / "a" / "small.png", 40, 60)
    _image(root / "b" / "big.png", 300, 200)
    data = ImageFolder.scan(root).load((224, 224))
    assert data.images.shape == (2, 224, 224, 3) and data.images.dtype == np.uint8
    assert data.original_sizes == {(40, 60), (300, 200)}
    assert list(data.labels) == [0, 1]
    assert tuple(data.images[0, 0, 0]) == (255, 0, 0)  # decoded as RGB


def test_strict_sizes_rejects_mixed_sizes_naming_them(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _image(root / "a" / "one.png", 40, 60)
    _image(root / "a" / "two.png", 40, 60)
    _image(root / "b" / "odd.png", 300, 200)
    with pytest.raises(DatasetError, match=r"2 different sizes: 60x40 \(2 image\(s\).*200x300 \(1 image\(s\), "
                                           r"e\.g\. b/odd\.png\)"):
        ImageFolder.scan(root).load((224, 224), strict_sizes=True)
    ImageFolder.scan(root).load((224, 224))  # without strict sizes: resized


@pytest.mark.parametrize(("layout", "message"), [
    ({}, "has no class sub-folders"),
    ({"only": 3}, "only one class \\('only'\\)"),
    ({"a": 2, "b": 0, "c": 0}, "class folder\\(s\\) without images: b, c"),
])
def test_bad_folders_give_clear_errors(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for name, n in layout.items():
        (root / name).mkdir()
        for i in range(n):
            _image(root / name / f"{i}.png")
    with pytest.raises(DatasetError, match=message):
        ImageFolder.scan(root)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolder.scan(tmp_path / "nope")


def test_unreadable_images_are_all_listed(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"2 image\(s\) cannot be decoded.*a/broken\.jpg, b/empty\.png"):
        ImageFolder.scan(root).load((224, 224))


def test_tiny_images_are_rejected(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", {"a": 1, "b": 1})
    _image(root / "b" / "thumb.png", MIN_SIDE - 1, 64)
    with pytest.raises(DatasetError, match=rf"smaller than {MIN_SIDE} pixels.*b/thumb\.png \(64x{MIN_SIDE - 1}\)"):
        ImageFolder.scan(root).load((224, 224))


def test_split_needs_two_images_per_class(tmp_path: Path) -> None:
    folder = ImageFolder.scan(_dataset(tmp_path / "d", {"a": 5, "lonely": 1}))
    with pytest.raises(DatasetError, match="lonely have fewer than 2 images"):
        folder.split(0.2)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        folder.split(1.5)


def test_cli_reports_a_bad_dataset_in_one_line(tmp_path: Path, shared_model: Path) -> None:
    root = _dataset(tmp_path / "d", {"a": 1})
    (root / "b").mkdir()
    out = vigil("evaluate", "--data", root, "--model", shared_model, "--out", tmp_path / "o")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: dataset ")
    assert "without images: b" in out.stderr
    assert "Traceback" not in out.stderr
