"""`vigil classify` end to end on the real model and photographs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.cli_helpers import vigil


def test_classify_folder_json_gives_expected_top1(shared_model: Path, images_dir: Path,
                                                  expected_images: dict[str, Any]) -> None:
    out = vigil("classify", images_dir, "--model", shared_model, "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    got = {Path(r["image"]).name: r for r in doc["results"]}
    assert set(got) == set(expected_images)
    for name, exp in expected_images.items():
        assert got[name]["top_k"][0]["label"] == exp["top1_label"], name
        assert got[name]["scene"]["label"] in {"animals", "people", "food", "water", "other", "nature",
                                               "vehicles", "buildings", "indoor"}
    assert doc["model"]["provider"] == "CPUExecutionProvider"
    assert doc["errors"] == []


def test_classify_text_output(shared_model: Path, images_dir: Path) -> None:
    out = vigil("classify", images_dir / "cat.png", "--model", shared_model, "-k", "2")
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{images_dir / 'cat.png'}: Egyptian cat (")
    assert "scene: animals" in first
    assert len(out.stdout.splitlines()) == 2


def test_unreadable_image_reported_others_still_classified(tmp_path: Path, shared_model: Path,
                                                           images_dir: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    shutil.copy(images_dir / "bird.png", tmp_path / "bird.png")
    out = vigil("classify", tmp_path, "--model", shared_model, "--json")
    assert out.returncode == 1
    assert f"error: image {bad} cannot be decoded" in out.stderr
    doc = json.loads(out.stdout)
    assert [Path(r["image"]).name for r in doc["results"]] == ["bird.png"]
    assert doc["results"][0]["top_k"][0]["label"] == "chickadee"


def test_missing_image_and_empty_folder(tmp_path: Path, shared_model: Path) -> None:
    out = vigil("classify", tmp_path / "nope.jpg", "--model", shared_model)
    assert out.returncode == 1
    assert f"image {tmp_path / 'nope.jpg'} does not exist" in out.stderr
    out = vigil("classify", tmp_path, "--model", shared_model)
    assert out.returncode == 1
    assert f"error: folder {tmp_path} has no images" in out.stderr


def test_missing_and_corrupt_model_cli(tmp_path: Path, images_dir: Path) -> None:
    out = vigil("classify", images_dir / "cat.png", "--model", tmp_path / "none.onnx")
    assert out.returncode == 1
    assert "does not exist; pass --model PATH, or run `vigil models fetch` / `vigil models export`" in out.stderr
    assert "Traceback" not in out.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    out = vigil("classify", images_dir / "cat.png", "--model", bad)
    assert out.returncode == 1 and "is not a valid ONNX model" in out.stderr


def test_no_model_anywhere_says_how_to_get_one(tmp_path: Path, images_dir: Path) -> None:
    out = vigil("classify", images_dir / "cat.png", env={"VIGIL_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 1
    for hint in ("--model PATH", "vigil models fetch", "vigil models export"):
        assert hint in out.stderr


def test_labels_wrong_count_cli(tmp_path: Path, shared_model: Path, images_dir: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    out = vigil("classify", images_dir / "cat.png", "--model", shared_model, "--labels", labels)
    assert out.returncode == 1
    assert "has 3 class names but the model has 1001 classes" in out.stderr


def test_bad_option_value(shared_model: Path, images_dir: Path) -> None:
    out = vigil("classify", images_dir / "cat.png", "--model", shared_model, "--resize", "stretch")
    assert out.returncode == 2
    assert "squash, center_crop or letterbox" in out.stderr
