"""`vigil run` on an existing Ray cluster (a real head started by the test): it deploys its own Serve
application there, deletes only that one on exit, and never replaces an application it finds."""

from __future__ import annotations

import json
import re
from itertools import groupby
from pathlib import Path

import yaml

from tests.cli_helpers import vigil
from tests.fixtures.ray_cluster import RayHead
from tests.fixtures.services import free_port


def write_config(tmp_path: Path, shared_model: Path, video_dir: Path, **extra: object) -> Path:
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": "slides", "url": str(video_dir / "slideshow.mp4"), "fps": 5, "loop": True}],
        "inference": {"model": str(shared_model), "device": "cpu", "http_port": 0, "batch_size": 4,
                      "replica_cpus": 0.5},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "results.jsonl")}],
        "metrics": {"port": 0}, "console": {"port": 0}, **extra}))
    return config


def summary(stderr: str) -> tuple[int, int, int, int]:
    """published, classified, dropped, dead-lettered from `vigil run`'s closing summary."""
    m = re.search(r"slides: (\d+) frame\(s\) published, (\d+) classified, (\d+) dropped, (\d+) dead-lettered",
                  stderr)
    assert m, stderr[-3000:]
    published, classified, dropped, dead = map(int, m.groups())
    return published, classified, dropped, dead


def test_run_joins_the_cluster_and_leaves_what_it_found(ray_head: RayHead, tmp_path: Path, shared_model: Path,
                                                          video_dir: Path) -> None:
    config = write_config(tmp_path, shared_model, video_dir)
    # 1. A cluster without Serve, joined through $RAY_ADDRESS (this crashed in ray.init before): vigil run
    #    starts Serve there, and on exit removes its application and the Serve it started.
    first = vigil("run", "-c", config, "--duration-s", "4", "--no-table",
                  env={**ray_head.client_env, "RAY_ADDRESS": ray_head.address}, timeout_s=240)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"joining the Ray cluster at {ray_head.address}" in first.stderr
    published, classified, dropped, dead = summary(first.stderr)
    assert published > 0 and published == classified + dropped + dead
    assert ray_head.applications() == {}

    # 2. The cluster runs an application of its own named `vigil` (as a RayService's) at route `/`.
    ray_head.deploy_other("vigil")
    (tmp_path / "results.jsonl").unlink()
    second = vigil("run", "-c", config, "--ray-address", ray_head.address, "--duration-s", "12", "--no-table",
                   env=ray_head.client_env, timeout_s=240)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "as Serve application 'vigil-run'" in second.stderr
    assert "HTTP on the cluster's Serve proxy at /vigil-run/classify" in second.stderr
    published, classified, dropped, dead = summary(second.stderr)
    assert published == classified + dropped + dead and classified >= 30
    expected = [s["expected_top1"] for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]]
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(results) == classified
    runs = [(label, len(list(g))) for label, g in groupby(r["top_k"][0]["label"] for r in results)]
    labels = [label for label, n in runs if n >= 3]  # whole segments; shorter runs are frames around a cut
    start = expected.index(labels[0])
    assert len(labels) >= 4 and labels == ((expected[start:] + expected[:start]) * 3)[:len(labels)], runs
    assert ray_head.applications() == {"vigil": "RUNNING"}  # it was there before: it survives

    # 3. Told to use a name that is taken, vigil run refuses and replaces nothing.
    clash = write_config(tmp_path, shared_model, video_dir, ray={"app_name": "vigil"})
    third = vigil("run", "-c", clash, "--ray-address", ray_head.address, "--duration-s", "4", "--no-table",
                  env=ray_head.client_env, timeout_s=120)
    assert third.returncode != 0
    assert "already runs a Serve application named 'vigil'" in third.stderr
    assert "set ray.app_name to a name of its own" in third.stderr
    assert ray_head.applications() == {"vigil": "RUNNING"}

    # 4. Without the cluster's token, vigil run says what is missing instead of hanging.
    no_token = vigil("run", "-c", config, "--ray-address", ray_head.address, "--no-table", timeout_s=120)
    assert no_token.returncode != 0
    assert "RAY_AUTH_MODE=token" in no_token.stderr and "RAY_AUTH_TOKEN_PATH" in no_token.stderr
    assert (Path(ray_head.client_env["RAY_AUTH_TOKEN_PATH"]).read_text() not in
            first.stderr + second.stderr + third.stderr + no_token.stderr)  # the token is never printed


def test_run_says_when_no_head_answers(tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    """An address where nothing listens fails in seconds with what to do, instead of Ray retrying for ever."""
    config = write_config(tmp_path, shared_model, video_dir)
    out = vigil("run", "-c", config, "--ray-address", f"127.0.0.1:{free_port()}", "--no-table", timeout_s=60)
    assert out.returncode != 0
    assert "no Ray head answers at 127.0.0.1:" in out.stderr and "ray start --head" in out.stderr
