"""`vigil bench` commands print their figures (nothing about speed is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import vigil


@pytest.mark.alone
def test_bench_model_reports_each_batch_size(shared_model: Path) -> None:
    out = vigil("bench", "model", "--model", shared_model, "--batch-sizes", "1,4", "--seconds", "0.3",
                "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["provider"] == "CPUExecutionProvider"
    assert [r["batch_size"] for r in doc["rows"]] == [1, 4]
    assert all(r["images_per_s"] > 0 and r["batches"] >= 3 for r in doc["rows"])
    text = vigil("bench", "model", "--model", shared_model, "--batch-sizes", "1,2,4", "--seconds", "0.2")
    assert text.returncode == 0 and "images/s" in text.stdout
    assert text.stderr.count("model mobilenet_v2_1.0_224_imagenet.onnx (") == 1, text.stderr  # loaded once


@pytest.mark.alone
def test_bench_pipeline_reports_ratio_and_frame_age(shared_model: Path, video_dir: Path) -> None:
    """Over two Redis instances, from two publisher processes, JPEG frames: the way one GPU is fed."""
    out = vigil("bench", "pipeline", "--model", shared_model, "--video", video_dir / "slideshow.mp4",
                "--seconds", "3", "--batch-size", "8", "--streams", "4", "--redis-instances", "2", "--publishers",
                "2", "--frame-encoding", "jpeg", "--json", timeout_s=240)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["raw_fps"] > 0 and doc["sustained_fps"] > 0
    assert 0 < doc["ratio"] <= 1.5  # the pipeline cannot run far faster than the raw runtime it feeds
    assert doc["frames"] > 0 and 0 < doc["age_ms_p50"] <= doc["age_ms_p95"] <= doc["age_ms_p99"]
    # The paced frames' results, on both instances (the four cameras are pinned over them).
    assert len(doc["results_per_instance"]) == 2 and all(n > 0 for n in doc["results_per_instance"])
    assert sum(doc["results_per_instance"]) == doc["frames"]
    assert (doc["redis_instances"], doc["publishers"], doc["frame_encoding"]) == (2, 2, "jpeg")


@pytest.mark.alone
def test_bench_pipeline_with_zones_and_classifiers_measures_the_three_steps(shared_model: Path) -> None:
    out = vigil("bench", "pipeline", "--model", shared_model, "--seconds", "3", "--batch-size", "8", "--streams", "2",
                "--zones", "3", "--classifiers", "4", "--json", timeout_s=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert [(s["zones"], s["classifiers"]) for s in doc["steps"]] == [(1, 1), (1, 4), (3, 4)]
    for s in doc["steps"]:  # every crop of every frame classified: crops/s is zones times frames/s
        assert s["frames_per_s"] > 0 and s["crops_per_s"] == pytest.approx(s["zones"] * s["frames_per_s"])
    one, many, zoned = doc["steps"]
    assert doc["heads_cost"] == pytest.approx(one["crops_per_s"] / many["crops_per_s"])
    assert doc["zones_cost"] == pytest.approx(many["crops_per_s"] / zoned["crops_per_s"])


def test_bench_ingest_publishes_every_sampled_frame_to_its_own_redis(video_dir: Path) -> None:
    out = vigil("bench", "ingest", video_dir / "bikes.mp4", "--fps", "5", "--seconds", "3", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    rows = {r["name"]: r for r in doc["runs"]}
    vigil_row = rows["vigil decode+sample+resize+publish"]
    assert vigil_row["published_frames"] == round(vigil_row["video_s"] * 5)  # every sampled frame reached Redis
    # Vigil decodes every frame FFmpeg decodes; keyframe-only mode decodes only the keyframes.
    assert abs(vigil_row["decoded_frames"] - rows["ffmpeg decode only"]["decoded_frames"]) <= 2
    assert 0 < rows["vigil keyframes only"]["decoded_frames"] < vigil_row["decoded_frames"] / 2
    assert doc["vigil_vs_ffmpeg"] > 0 and doc["keyframes_only_cpu_saving"] > 0
    # The console's pictures: one a video second, their CPU measured apart.
    assert vigil_row["previews"] == round(vigil_row["video_s"]) and 0 < doc["preview_cpu_share"] < 1
