"""Relative paths in a config file are relative to the file's folder, wherever Vigil is started from."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.config import EventsSinkConfig, JsonlSinkConfig, load_config, validate_config

SITE = """
streams:
  - {id: lobby, url: videos/lobby.mp4}
  - {id: door, url: "rtsp://cam/1"}
  - {id: usb, url: /dev/video0}
  - {id: abs, url: /srv/videos/a.mp4}
inference: {model: models/site.onnx, labels: ../shared/labels.txt, scene_map: "~/maps/scene.yaml"}
sinks:
  - {type: jsonl, path: out/results.jsonl}
  - {type: events, path: out/events.jsonl}
  - {type: webhook, url: "http://127.0.0.1:9/hook"}
"""


def test_paths_are_taken_from_the_config_files_folder_not_the_current_one(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "vigil.yaml").write_text(SITE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = os.getcwd()
    os.chdir(elsewhere)
    try:
        cfg = load_config(Path("../site/vigil.yaml"), environ={})
    finally:
        os.chdir(before)
    root = site.resolve()
    assert [s.url for s in cfg.streams] == [str(root / "videos/lobby.mp4"), "rtsp://cam/1", "/dev/video0",
                                            "/srv/videos/a.mp4"]
    assert cfg.inference.model == str(root / "models/site.onnx")
    assert cfg.inference.labels == str(root / "../shared/labels.txt")
    assert cfg.inference.scene_map == str(Path("~/maps/scene.yaml").expanduser())  # ~ is the user's home
    jsonl, events, _ = cfg.sinks
    assert isinstance(jsonl, JsonlSinkConfig) and jsonl.path == str(root / "out/results.jsonl")
    assert isinstance(events, EventsSinkConfig) and events.path == str(root / "out/events.jsonl")


def test_a_config_validated_from_a_mapping_keeps_its_paths() -> None:
    cfg = validate_config({"streams": [{"id": "a", "url": "videos/a.mp4"}]}, environ={})
    assert cfg.streams[0].url == "videos/a.mp4"
