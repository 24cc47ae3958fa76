"""Zones end to end (`vigil run`'s LocalPipeline): one camera, decoded once, classified in several regions.

The camera serves the slideshow beside the bikes footage (1280x480, made with ffmpeg): the zone on its
left half is the slideshow's picture again, so its results must follow the slideshow's labels segment by
segment (the shared oracle), while the whole picture and the street are classified on their own. Real
GStreamer RTSP server, embedded redis-server, Ray Serve, the shared model, the console's REST API.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.core.config import validate_config
from pipeline.ops.runner import LocalPipeline
from tests.fixtures import media
from tests.fixtures.services import RtspServer, wait_for
from tests.pipeline.ops.test_runner import assert_segments_in_order, drained, read_results

TOKEN = "zones-console-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONES = [{"id": "slides", "xyxy": [0, 0, 0.5, 1]},
         {"id": "street", "polygon": [[0.5, 0], [1, 0], [1, 1], [0.55, 1]], "resize": "center_crop"}]


def config(url: str, out: Path, model: Path) -> Any:
    return validate_config({
        "streams": [{"id": "two", "url": url, "fps": 5, "zones": ZONES}],
        "ingest": {"open_timeout_s": 5, "read_timeout_s": 2, "stall_timeout_s": 2, "backoff_base_s": 0.5,
                   "backoff_cap_s": 2},
        "inference": {"model": str(model), "device": "cpu", "batch_size": 16, "batch_window_ms": 20,
                      "replica_cpus": 0.5, "http_port": 0, "claim_idle_s": 5},
        "sinks": [{"type": "jsonl", "path": str(out)}],
        "metrics": {"port": 0}, "console": {"port": 0, "token": TOKEN},
    }, environ={})


def zone_counts(metrics_port: int, stream_id: str = "two") -> dict[tuple[str, str], float]:
    """``(family, zone) -> value`` of a camera's per-zone accounting (reasons summed), from the real /metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    out: dict[tuple[str, str], float] = defaultdict(float)
    for m in re.finditer(r'^vigil_pipeline_zone_(\w+)_total\{([^}]*)\} (\S+)$', text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels["stream"] == stream_id:
            out[m.group(1), labels["zone"]] += float(m.group(3))
    return out


def by_zone(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        out[r["zone"]].append(r)
    return out


@pytest.fixture
def two_pictures(tmp_path: Path, video_dir: Path) -> Path:
    return media.side_by_side(video_dir / "slideshow.mp4", video_dir / "bikes.mp4", tmp_path / "two.mp4")


def test_zones_are_classified_on_their_own_and_counted_exactly(tmp_path: Path, rtsp_factory: Any, two_pictures: Path,
                                                             shared_model: Path, video_dir: Path) -> None:
    expected = [s["expected_top1"] for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]]
    out = tmp_path / "results.jsonl"
    server: RtspServer = rtsp_factory({"two": two_pictures})
    with LocalPipeline(config(server.url("two"), out, shared_model), ray_cpus=2) as pipeline:
        assert pipeline.console is not None and pipeline.ingest is not None
        api = f"{pipeline.console.url}api/v1/streams/two"
        assert wait_for(lambda: len(by_zone(read_results(out))["slides"]) >= 75, 120), len(read_results(out))
        camera = pipeline.ingest.cameras["two"]
        reconnects = camera.reconnects

        # Bad zones are refused with the key and the reason; nothing running changes.
        small = httpx.put(f"{api}/zones", json=[{"id": "tiny", "xyxy": [0.1, 0.1, 0.11, 0.15]}], headers=AUTH)
        assert small.status_code == 422 and "zones[0]: zone 'tiny'" in small.text and "1280x480" in small.text
        outside = httpx.put(f"{api}/zones", json=[{"id": "out", "xyxy": [0.5, 0.5, 1.5, 1]}], headers=AUTH)
        assert outside.status_code == 422 and "zones[0].xyxy[2]: must be <= 1" in outside.text
        empty = httpx.put(f"{api}/zones", json=[{"id": "flat", "xyxy": [0.2, 0.5, 0.6, 0.5]}], headers=AUTH)
        assert empty.status_code == 422 and "zero area" in empty.text

        # A new zone list applies to the next frames, without reconnecting the camera.
        changed = httpx.put(f"{api}/zones", json=[ZONES[0], {"id": "sky", "xyxy": [0.5, 0, 1, 0.4]}], headers=AUTH)
        assert changed.status_code == 200, changed.text
        assert wait_for(lambda: len(by_zone(read_results(out))["sky"]) >= 10, 30)
        assert camera.reconnects == reconnects and pipeline.ingest.cameras["two"] is camera
        view = httpx.get(api, timeout=10).json()
        assert [z["id"] for z in view["zones"]] == ["full", "slides", "sky"]
        assert view["zones"][1]["label"]["name"] in expected and view["label"] is not None

        server.kill()  # the camera goes away: every frame it published gets its fate, then the counts are final
        assert wait_for(lambda: drained(pipeline.metrics_port, ["two"]), 60)
        counts = zone_counts(pipeline.metrics_port)

    results = by_zone(read_results(out))
    assert_segments_in_order(results["slides"], expected)  # the left half is the slideshow again
    assert len(results["street"]) >= 75
    # A frame's zones travel together: each frame of the first zone list has exactly its three records.
    frames: dict[str, set[str]] = defaultdict(set)
    for zone, records in results.items():
        for r in records:
            frames[r["frame_id"]].add(zone)
    assert {frozenset(z) for z in frames.values()} <= {frozenset({"full", "slides", "street"}),
                                                      frozenset({"full", "slides", "sky"})}
    # Exact accounting per zone: published = classified + dropped + dead-lettered, in the metrics.
    for zone in ("full", "slides", "sky"):
        published = counts["published_crops", zone]
        assert published > 0 and published == counts["inferred_crops", zone] + counts["dropped_crops", zone] + \
            counts["dead_lettered_crops", zone], (zone, dict(counts))
        # Every classified crop reached the sink (at least once: count distinct frames).
        assert counts["inferred_crops", zone] == len({r["frame_id"] for r in results[zone]}), zone
    assert ("published_crops", "street") not in counts  # a removed zone leaves the labels: bounded by the config
