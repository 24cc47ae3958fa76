"""`vigil bench overload`: its verdicts as pure logic, and one short run of the real path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.bench.overload import OverloadReport, Step, verdicts
from pipeline.cli import app
from pipeline.cli.bench_overload_cmd import _parse_loads


def step(load: float, classified: float, *, p95: float = 200, share: float = 1.02, stale: int = 0,
         published: float | None = None) -> Step:
    offered = 180 * (load or 4)
    return Step(load=load, camera_fps=offered / 32, offered_fps=offered,
                published_fps=published if published is not None else min(offered, classified),
                classified_fps=classified, age_ms=(80, p95, p95 * 1.3), share_max_min=share,
                dropped={"stale": stale} if stale else {}, process_cpu_ms_per_frame=4, machine_cpu_pct=85,
                redis_mb=12, redis_bound_mb=24)


def test_verdicts_compare_each_target_with_the_steps_that_bear_on_it() -> None:
    report = OverloadReport(cameras=32, source_fps=25, capacity_fps=180, frame_bytes=150_000, steps=[
        step(0, 180), step(0.5, 90), step(1.0, 180), step(2.0, 175, p95=450), step(3.0, 160, share=1.2)])
    got = {v.name: v for v in verdicts(report)}
    assert got["capacity"].met  # 180 of 720 offered published
    assert not got["throughput"].met and got["throughput"].figure == "0.89 (lowest at 300%)"  # 160 / 180
    assert got["age"].met and got["age"].figure == "450 ms at 200%"
    assert not got["fairness"].met
    assert got["memory"].met and got["fresh"].met and got["identity"].met and got["delivery"].met
    assert "efficiency" not in got  # the model's raw rate was not measured
    report.model_raw_fps, report.model_raw_batch = 300.0, 2
    efficiency = {v.name: v for v in verdicts(report)}["efficiency"]
    assert not efficiency.met and efficiency.figure == "0.60 (180 of 300 images/s at batch 2)"


def test_verdicts_flag_a_capacity_step_the_cameras_could_not_saturate_and_stale_drops_under_capacity() -> None:
    report = OverloadReport(cameras=4, source_fps=25, capacity_fps=100, frame_bytes=150_000,
                            steps=[step(0, 100, published=100 * 4 * 1.8), step(0.5, 50, stale=3)],
                            identity_problems=["cam00: published 10 != inferred 9 + dropped 0 + dead-lettered 0"])
    got = {v.name: v for v in verdicts(report)}
    assert not got["capacity"].met and not got["fresh"].met and not got["identity"].met


def test_loads_parse_as_fractions_or_percentages() -> None:
    assert _parse_loads("0.5, 1,3") == (0.5, 1.0, 3.0)
    assert _parse_loads("50%,300%") == (0.5, 3.0)
    for bad in ("", "fast", "0,1", "-1"):
        with pytest.raises(Exception, match="comma-separated positive loads"):
            _parse_loads(bad)


@pytest.mark.alone
def test_a_short_run_over_real_rtsp_cameras_reports_every_step_and_an_exact_identity(
        shared_model: Path, video_dir: Path) -> None:
    result = CliRunner().invoke(app, [
        "bench", "overload", str(video_dir / "bikes.mp4"), "--model", str(shared_model), "--cameras", "3",
        "--loads", "0.5,2", "--seconds", "3", "--settle-s", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{"):])
    capacity, half, double = doc["steps"]
    assert capacity["camera_fps"] == 25 and capacity["offered_fps"] == 75
    assert doc["capacity_fps"] == capacity["classified_fps"] > 0
    for s, load in ((half, 0.5), (double, 2.0)):
        assert s["load"] == load
        assert s["camera_fps"] == pytest.approx(min(25, load * doc["capacity_fps"] / 3))
        assert s["classified_fps"] > 0 and all(math.isfinite(a) and a > 0 for a in s["age_ms"])
        assert s["redis_bound_mb"] >= 20 and s["process_cpu_ms_per_frame"] > 0
    assert doc["identity_problems"] == [] and doc["results_lost"] == 0
    assert doc["model_raw_fps"] > 0 and doc["model_raw_batch"] in (1, 2, 4, 8, 16, 32)
    assert any(t["name"] == "efficiency" for t in doc["targets"])  # its figure, met or not
    assert {t["name"] for t in doc["targets"] if t["met"]} >= {"identity", "delivery"}
