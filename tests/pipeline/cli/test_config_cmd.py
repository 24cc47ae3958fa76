"""`vigil config check`: beyond keys and values, the model, files and watch labels a config names."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import vigil

REPO = Path(__file__).resolve().parents[3]


def _config(folder: Path, body: str) -> Path:
    path = folder / "site" / "vigil.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def test_missing_model_and_video_files_are_problems(tmp_path: Path, video_dir: Path) -> None:
    config = _config(tmp_path, f"""
streams:
  - {{id: lobby, url: ./videos/lobby.mp4, loop: true}}
  - {{id: bikes, url: {video_dir / 'bikes.mp4'}, loop: true}}
inference: {{model: models/mine.onnx}}
""")
    out = vigil("config", "check", config)
    assert out.returncode == 2, out.stdout
    site = tmp_path / "site"
    assert f"streams[0].url (lobby): no video file {site / 'videos/lobby.mp4'}" in out.stderr
    assert f"inference.model: no model file {site / 'models/mine.onnx'}" in out.stderr
    assert "streams[1]" not in out.stderr and "2 problem(s)" in out.stderr


def test_without_a_model_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    config = _config(tmp_path, "streams: [{id: a, url: 'rtsp://127.0.0.1:1/x'}]\n")
    out = vigil("config", "check", config, env={"VIGIL_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert out.returncode == 2
    assert "inference.model:" in out.stderr and "vigil models fetch" in out.stderr


def test_watch_keys_must_name_a_class_or_a_scene_category(tmp_path: Path, shared_model: Path) -> None:
    good = {"people": 0.5, "Egyptian_cat": 0.3, "scooter": 0.2, "518_crane": 0.2, "286": 0.1}
    bad = {"person": 0.5, "crane": 0.2, "n02124075": 0.1}
    watch = ", ".join(f'"{k}": {v}' for k, v in {**good, **bad}.items())
    config = _config(tmp_path, f"""
streams: [{{id: a, url: 'rtsp://127.0.0.1:1/x'}}]
inference: {{model: {shared_model}}}
sinks: [{{type: events, path: events.jsonl, watch: {{{watch}}}}}]
""")
    out = vigil("config", "check", config)
    assert out.returncode == 2
    problems = [line.strip() for line in out.stderr.splitlines()[1:]]
    assert len(problems) == 3, out.stderr
    scenes = "scene categories: animals, people, vehicles, water, nature, buildings, indoor, food, other"
    assert problems[0].startswith("sinks[0].watch.person (model mobilenet_v2_1.0_224_imagenet.onnx): 'person' "
                                  "is not a class of the model (1001 classes); nearest: ")
    assert problems[0].endswith(scenes)
    assert problems[1].startswith("sinks[0].watch.crane (model mobilenet_v2_1.0_224_imagenet.onnx): 'crane' "
                                  "names 2 classes of the model: write 135_crane ('crane'), 518_crane ('crane');")
    assert problems[2] == "sinks[0].watch.n02124075: write the class as '286_Egyptian_cat' (results carry no " \
                          "WordNet ids)"
    ok = _config(tmp_path, config.read_text().replace(', "person": 0.5, "crane": 0.2, "n02124075": 0.1', ""))
    out = vigil("config", "check", ok)
    assert out.returncode == 0, out.stderr
    assert "OK: 1 stream(s)" in out.stdout


def test_example_config(tmp_path: Path) -> None:
    """The example's keys and values are valid; its placeholder video file is reported by the full check."""
    example = REPO / "examples" / "vigil.yaml"
    out = vigil("config", "check", example, "--schema-only")
    assert out.returncode == 0, out.stderr
    assert "OK: 3 stream(s)" in out.stdout
    out = vigil("config", "check", example, env={"VIGIL_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert f"streams[2].url (lobby-file): no video file {REPO / 'examples/videos/lobby.mp4'}" in out.stderr
    assert "watch" not in out.stderr  # the example watches scene category `people`, which ImageNet models have
