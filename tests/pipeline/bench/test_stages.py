"""`vigil bench stages` on a real Redis and the shared video: every step measured, the figures consistent."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from pipeline.bench.stages import STAGES, bench_stages
from pipeline.cli.bench_pipeline_cmd import model_frames
from pipeline.core.keys import RESULTS_KEY, stats_key
from tests.cli_helpers import vigil


def test_every_step_costs_cpu_and_the_frames_really_went_through_redis(clean_redis_url: str,
                                                                       video_dir: Path) -> None:
    frames = model_frames(video_dir / "bikes.mp4", 224, 224, count=20)
    costs = bench_stages(frames, count=300, batch=32, cameras=3, redis_url=clean_redis_url)
    assert [(c.encoding, c.stage) for c in costs] == [(e, s) for e in ("raw", "jpeg") for s in STAGES]
    by = {(c.encoding, c.stage): c for c in costs}
    for c in costs:
        assert c.frames == 300 and c.client_us > 0 and c.redis_us >= 0
        assert c.cores_at(25_000) == c.total_us * 25_000 / 1e6
    for e in ("raw", "jpeg"):  # the steps that talk to Redis cost Redis CPU; pure encoding does not
        assert by[e, "publish"].redis_us > by[e, "encode"].redis_us
        assert by[e, "read"].redis_us > 0 and by[e, "result write + ack"].redis_us > 0
    assert by["jpeg", "decode"].client_us > 3 * by["raw", "decode"].client_us  # JPEG decoding is the cost there
    client = redis.Redis.from_url(clean_redis_url)
    try:  # every frame was classified-and-acknowledged: 2 x 300 results, nothing left pending
        assert client.xlen(RESULTS_KEY) == 600
        stats = [client.hgetall(k) for k in client.scan_iter(match=stats_key("bench-*"))]
        assert sum(int(s[b"inferred"]) for s in stats) == 600 and sum(int(s[b"published"]) for s in stats) == 600
    finally:
        client.close()


def test_cli_prints_json_with_cores_at_the_target(video_dir: Path) -> None:
    out = vigil("bench", "stages", "--video", video_dir / "bikes.mp4", "--frames", "200", "--encodings", "jpeg",
                "--target-fps", "1000", "--json", timeout_s=120)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["target_fps"] == 1000 and [r["stage"] for r in doc["rows"]] == list(STAGES)
    assert all(abs(r["cores"] - r["total_us"] * 1000 / 1e6) < 1e-9 for r in doc["rows"])
    bad = vigil("bench", "stages", "--encodings", "png")
    assert bad.returncode != 0 and "raw, jpeg" in bad.stderr
