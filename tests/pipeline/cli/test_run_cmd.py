"""`vigil demo`, the README's first command: the real pipeline on the shared slideshow, results and events."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli_helpers import vigil
from tests.fixtures.services import free_port


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_demo_classifies_the_video_and_reports_label_changes(shared_model: Path, video_dir: Path,
                                                            tmp_path: Path) -> None:
    out = vigil("demo", video_dir / "slideshow.mp4", "--model", shared_model, "--duration-s", "16",
                "--out", tmp_path, timeout_s=240)
    assert out.returncode == 0, out.stderr[-3000:]
    # Where the results go, on one line however long the paths (not wrapped at 80 columns: copied from here).
    assert f"results: {tmp_path / 'results.jsonl'}  events: {tmp_path / 'events.jsonl'}\n" in out.stderr
    expected = {s["expected_top1"] for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]}
    records = read_jsonl(tmp_path / "results.jsonl")
    assert len(records) >= 30, len(records)  # 5 frames/s once the pipeline is up
    assert all(r["stream"] == "demo" and r["scene"] for r in records)
    assert expected <= {r["top_k"][0]["label"] for r in records}  # type: ignore[index]
    changed = [e["to"] for e in read_jsonl(tmp_path / "events.jsonl") if e["event"] == "label_changed"]
    assert len(set(changed)) >= 4 and set(changed) <= expected, changed


def test_run_duration_counts_from_when_the_pipeline_is_up(shared_model: Path, video_dir: Path,
                                                           tmp_path: Path) -> None:
    # Start-up (Redis, Ray, the model) takes 15-25 s here; a 6 s run must still classify about 6 s of video.
    (tmp_path / "vigil.yaml").write_text(f"""
streams: [{{id: cam, url: {video_dir / 'bikes.mp4'}, loop: true, fps: 5}}]
inference: {{batch_size: 8, http_port: 0}}
sinks: [{{type: jsonl, path: results.jsonl}}]
metrics: {{port: 0}}
console: {{port: 0}}
""")
    # No model in the config and none cached: `--model` gives it.
    out = vigil("run", "--config", tmp_path / "vigil.yaml", "--model", shared_model, "--duration-s", "6",
                "--no-table", env={"VIGIL_CACHE_DIR": str(tmp_path / "empty-cache")}, timeout_s=240)
    assert out.returncode == 0, out.stderr[-3000:]
    records = read_jsonl(tmp_path / "results.jsonl")  # the sink path is relative to the config's folder
    captured = sorted(float(r["capture_ts"]) for r in records)  # type: ignore[arg-type]
    assert len(records) >= 20 and captured[-1] - captured[0] >= 4.5, (len(records), captured[-1] - captured[0])
    # Each start-up step says what it is doing, in order; at the end, what the run did and where it went.
    steps = ["vigil run: model", "vigil run: starting Ray", "vigil run: Ray up in", "vigil run: inference ready",
             "ingest worker: shard", "stopping:", "stopped"]
    at = [out.stderr.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), dict(zip(steps, at, strict=True))
    summary = re.search(r"cam: (\d+) frame\(s\) published, (\d+) classified, (\d+) dropped, (\d+) dead-lettered",
                        out.stderr)
    assert summary is not None, out.stderr[-2000:]
    published, classified, dropped, dead = map(int, summary.groups())
    assert classified == len(records) and published == classified + dropped + dead
    assert f"results went to: jsonl-0 -> {tmp_path / 'results.jsonl'}" in out.stderr


def test_demo_without_a_model_fetches_one_or_says_how_to_get_one(video_dir: Path, tmp_path: Path) -> None:
    """A newcomer has no model: the demo downloads the pinned one. Offline (here: every HTTPS request
    goes to a proxy port nobody listens on, so the download really fails) it says what to do instead."""
    closed = free_port()
    out = vigil("demo", video_dir / "slideshow.mp4", "--duration-s", "5",
                env={"VIGIL_CACHE_DIR": str(tmp_path / "cache"), "HTTPS_PROXY": f"http://127.0.0.1:{closed}",
                     "HTTP_PROXY": f"http://127.0.0.1:{closed}", "NO_PROXY": ""}, timeout_s=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "downloading the pinned MobileNetV2" in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot download https://") and "Offline? Then pass --model PATH" in last
    assert "vigil models export" in last and not list((tmp_path / "cache").glob("*.onnx"))
