"""`vigil evaluate` on folders built from the shared photographs: the metrics, the files, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from models.evaluate import EvalOptions, compute_metrics, evaluate, map_classes
from models.info import model_info
from pipeline.core.errors import DatasetError
from pipeline.inference.labels import read_labels_file
from tests.cli_helpers import vigil
from tests.models.lab_data import photo_dataset

CAT, CHICKADEE, HOTDOG = "Egyptian cat", "chickadee", "hotdog, hot dog, red hot"
MACAW, UNIFORM = "macaw", "military uniform"
QUIET = EvalOptions(device="cpu", progress=False)


def test_photographs_by_their_labels_score_one(tmp_path: Path, shared_model: Path, images_dir: Path,
                                               expected_images: dict[str, Any]) -> None:
    data = photo_dataset(images_dir, expected_images, tmp_path / "photos")
    report = evaluate(shared_model, data, tmp_path / "out", QUIET)
    n = len(expected_images)
    assert report["samples"] == n
    assert report["accuracy"] == 1.0 and report["top5_accuracy"] == 1.0
    assert report["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert report["weighted"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    cm = np.array(report["confusion"]["matrix"])
    assert cm.shape == (n, n) and (cm == np.eye(n, dtype=int)).all()  # diagonal, no "(other)" column
    assert report["model"]["size_bytes"] == shared_model.stat().st_size
    assert report["model"]["parameters"] == model_info(shared_model)["parameters"] > 3_000_000
    assert report["throughput"]["images_per_s"] > 0
    # The files: JSON report, CSV and PNG confusion matrix.
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["accuracy"] == 1.0 and saved["confusion"] == report["confusion"]
    with (tmp_path / "out" / "confusion.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == report["confusion"]["rows"] and len(rows) == n + 1
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == cm.tolist()
    png = cv2.imread(str(tmp_path / "out" / "confusion.png"))
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 300


def _mislabelled(images_dir: Path, root: Path) -> Path:
    """Eight photographs in five class folders; four are in the wrong folder."""
    layout = {CAT: ["bird.png"], CHICKADEE: ["cat.png"], MACAW: ["parrot.png", "parrot.png"],
              HOTDOG: ["hot_dog.png", "parrot.png"], UNIFORM: ["grace_hopper.png", "potato_chips.png"]}
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True)
        for i, name in enumerate(files):
            shutil.copy(images_dir / name, root / folder / f"{i}_{name}")
    return root


def test_mislabelled_copy_matches_a_hand_computation(tmp_path: Path, shared_model: Path, images_dir: Path) -> None:
    report = evaluate(shared_model, _mislabelled(images_dir, tmp_path / "bad"), None, QUIET)
    # Predictions: bird -> chickadee, cat -> Egyptian cat, parrot -> macaw (x3), hot dog -> hotdog,
    # Grace Hopper -> military uniform, potato chips -> packet (none of the folders: "(other)").
    assert report["confusion"]["rows"] == [CAT, CHICKADEE, HOTDOG, MACAW, UNIFORM]
    assert report["confusion"]["columns"] == [CAT, CHICKADEE, HOTDOG, MACAW, UNIFORM, "(other)"]
    assert report["confusion"]["matrix"] == [[0, 1, 0, 0, 0, 0],
                                             [1, 0, 0, 0, 0, 0],
                                             [0, 0, 1, 1, 0, 0],
                                             [0, 0, 0, 2, 0, 0],
                                             [0, 0, 0, 0, 1, 1]]
    assert report["accuracy"] == 4 / 8
    # Top-5: the parrots and the hot dog / Grace Hopper photos are right; the four others' true class
    # is nowhere in their top 5 (expected.json).
    assert report["top5_accuracy"] == 4 / 8
    per = report["per_class"]
    hand = {CAT: (0, 0, 0, 1), CHICKADEE: (0, 0, 0, 1), HOTDOG: (1, 1 / 2, 2 / 3, 2), MACAW: (2 / 3, 1, 4 / 5, 2),
            UNIFORM: (1, 1 / 2, 2 / 3, 2)}
    for name, (p, r, f1, support) in hand.items():
        assert per[name]["precision"] == pytest.approx(p)
        assert per[name]["recall"] == pytest.approx(r)
        assert per[name]["f1"] == pytest.approx(f1)
        assert per[name]["support"] == support
    assert report["macro"]["precision"] == pytest.approx((1 + 2 / 3 + 1) / 5)
    assert report["macro"]["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 5)
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 4 / 5 + 2 / 3) / 5)
    assert report["weighted"]["precision"] == pytest.approx((2 * 1 + 2 * 2 / 3 + 2 * 1) / 8)
    assert report["weighted"]["recall"] == pytest.approx((2 * 1 / 2 + 2 * 1 + 2 * 1 / 2) / 8)
    assert report["weighted"]["f1"] == pytest.approx((2 * 2 / 3 + 2 * 4 / 5 + 2 * 2 / 3) / 8)
    wrong = {(Path(p["path"]).name, p["predicted"]) for p in report["predictions"] if p["true"] != p["predicted"]}
    assert wrong == {("0_bird.png", CHICKADEE), ("0_cat.png", CAT), ("1_parrot.png", MACAW),
                     ("1_potato_chips.png", "(other)")}


def test_compute_metrics_edge_cases() -> None:
    # Class "b" is never predicted (precision 0, not a division error); one prediction is "other" (2).
    m = compute_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 2]), ["a", "b"])
    assert m["confusion"]["matrix"] == [[2, 0, 0], [1, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["top5_accuracy"] is None


def test_class_folders_match_full_names_or_unambiguous_synonyms(shared_labels: Path) -> None:
    names = read_labels_file(shared_labels)
    assert map_classes(["egyptian cat", "hotdog"], names) == [names.index(CAT), names.index(HOTDOG)]
    with pytest.raises(DatasetError, match="'crane' names 2 classes of the model: write 135_crane"):
        map_classes(["crane", "hotdog"], names)  # the bird and the machine
    with pytest.raises(DatasetError, match="'gate open' is not a class of the model"):
        map_classes(["gate open", "hotdog"], names)
    with pytest.raises(DatasetError, match="same model class"):
        map_classes(["hotdog", "hot dog"], names)


def test_evaluate_cli_takes_folders_as_people_name_them(tmp_path: Path, shared_model: Path, images_dir: Path,
                                                        expected_images: dict[str, Any]) -> None:
    """Folder names in any case, with _ for spaces, as a synonym, an index or a WordNet id."""
    folders = {"cat.png": "Egyptian_cat", "bird.png": "n01592084", "parrot.png": "89_macaw",
               "hot_dog.png": "HOT_DOG"}
    data = tmp_path / "named"
    for image, folder in folders.items():
        (data / folder).mkdir(parents=True)
        shutil.copy(images_dir / image, data / folder / image)
    out = vigil("evaluate", "--data", data, "--model", shared_model, "--out", tmp_path / "o", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accuracy"] == 1.0
    (data / "chikadee").mkdir()
    shutil.copy(images_dir / "bird.png", data / "chikadee" / "bird.png")
    out = vigil("evaluate", "--data", data, "--model", shared_model, "--out", tmp_path / "p")
    assert out.returncode == 1
    assert "'chikadee' is not a class of the model (1001 classes); nearest: 'chickadee'" in out.stderr


def test_evaluate_cli(tmp_path: Path, shared_model: Path, images_dir: Path, expected_images: dict[str, Any]) -> None:
    data = photo_dataset(images_dir, expected_images, tmp_path / "photos")
    out = vigil("evaluate", "--data", data, "--model", shared_model, "--out", tmp_path / "o", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "accuracy 1.000" in out.stdout and "top-5 1.000" in out.stdout and "macro avg" in out.stdout
    assert (tmp_path / "o" / "confusion.png").is_file()
    out = vigil("evaluate", "--data", data, "--model", shared_model, "--out", tmp_path / "j", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accuracy"] == 1.0
