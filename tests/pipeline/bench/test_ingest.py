"""`vigil bench ingest` against a given Redis."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from tests.fixtures.services import RedisServer


def test_bench_ingest_reports_figures(redis_server: RedisServer, video_dir: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "ingest", str(video_dir / "bikes.mp4"), "--seconds", "2",
                                      "--redis-url", redis_server.url(), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    full, keyframes = doc["runs"][1], doc["runs"][2]
    # At least one whole pass over the 10 s clip: 250 frames decoded, 50 sampled at 5 fps.
    assert doc["runs"][0]["decoded_frames"] == full["decoded_frames"] == 250
    assert full["published_frames"] == 50
    assert keyframes["decoded_frames"] < full["decoded_frames"]
    assert doc["vigil_vs_ffmpeg"] > 0 and 0 < doc["keyframes_only_cpu_saving"] < 1
