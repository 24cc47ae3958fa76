"""Model hot swap during `vigil run`: frames keep flowing, none is lost, results carry the version.

Real RTSP server (the slideshow), real Redis, Ray Serve and sinks; the swap goes from the shared
ImageNet model to a model fine-tuned (in the test) on frames of the shared videos, so the results
after the swap also show that a fine-tuned model classifies through the pipeline with its new classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

from models.finetune import FinetuneOptions, finetune
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.services import RtspServer, wait_for
from tests.models.lab_data import SEGMENT_CLASSES, video_dataset
from tests.pipeline.ops.test_runner import config, drained, read_results, scrape

NEW_VERSION = "ft-swap-test"


def test_model_swap_during_run_loses_no_frame(tmp_path: Path, rtsp_factory: Callable[..., RtspServer],
                                              shared_model: Path, video_dir: Path) -> None:
    tuned = finetune(shared_model, video_dataset(video_dir, tmp_path / "data", per_class=10), tmp_path / "ft.onnx",
                     FinetuneOptions(model_version=NEW_VERSION, progress=False)).model
    server = rtsp_factory({"slideshow": video_dir / "slideshow.mp4"})
    out = tmp_path / "results.jsonl"
    base = config([{"id": "cam", "url": server.url("slideshow"), "fps": 4}], out, shared_model)
    # Every frame classified, however long the swap holds it on a loaded machine: dropping frames older than
    # max_frame_age_ms is a feature of its own (tests/pipeline/bus/test_freshness.py), not what this test counts.
    cfg = base.model_copy(update={"inference": base.inference.model_copy(update={"max_frame_age_ms": 600_000})})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert wait_for(lambda: len(read_results(out)) >= 8, 120), "no results before the swap"
        swap_started = time.time()
        pipeline.swap_model(tuned)
        swap_done = time.time()
        assert pipeline.model_path == tuned

        def new_results() -> int:
            return sum(r["model"]["version"] == NEW_VERSION for r in read_results(out))

        assert wait_for(lambda: new_results() >= 16, 90), f"only {new_results()} results from the new model"
        server.kill()  # the camera stops; then the queue drains

        assert wait_for(lambda: drained(pipeline.metrics_port, ["cam"]), 60)
        m = scrape(pipeline.metrics_port)
        published = m[("vigil_pipeline_published_frames_total", "cam")]
        assert published == m[("vigil_ingest_published_frames_total", "cam")]  # no outage here: both views agree
        inferred = m[("vigil_pipeline_inferred_frames_total", "cam")]
        dropped = m[("vigil_pipeline_dropped_frames_total", "cam")]
        dead = m[("vigil_pipeline_dead_lettered_frames_total", "cam")]
        assert published == inferred + dropped + dead, (published, inferred, dropped, dead)
        assert dropped == 0 and dead == 0, (dropped, dead)
        assert wait_for(lambda: len(read_results(out)) == inferred, 20)

    results = sorted(read_results(out), key=lambda r: r["seq"])
    assert [r["seq"] for r in results] == list(range(int(published)))  # every frame, exactly once
    old = [r for r in results if r["model"]["version"] != NEW_VERSION]
    new = [r for r in results if r["model"]["version"] == NEW_VERSION]
    assert len({r["model"]["version"] for r in old}) == 1 and len(old) >= 8
    assert all(r["inference_ts"] < swap_done for r in old)  # nothing from the old model after the swap
    assert all(r["inference_ts"] > swap_started for r in new)
    assert max(r["seq"] for r in old) < min(r["seq"] for r in new) + 16  # at most a batch or two overlap
    assert new[0]["model"]["name"] == "ft"
    # The old model speaks ImageNet; the new one the fine-tuned classes, segment by segment.
    assert {r["top_k"][0]["label"] for r in old} <= set(SLIDESHOW_IMAGENET)
    labels = [r["top_k"][0]["label"] for r in new]
    assert set(labels) <= {*SEGMENT_CLASSES, "bikes"}
    runs = [label for label, g in groupby(labels) if len(list(g)) >= 3]
    assert runs and set(runs) <= set(SEGMENT_CLASSES), labels


SLIDESHOW_IMAGENET = ("Egyptian cat", "chickadee", "macaw", "hotdog, hot dog, red hot", "military uniform")
