"""Chaos under `vigil run`'s pipeline (embedded Redis, Ray Serve, ingest, sinks): faults one after another
(camera server flaps, Redis frozen, the replica killed), then the exact identity per camera and no lost
result. Bounded in time; the figures are printed (-s)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import ray

from pipeline.ingest.camera import CameraState
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.services import RtspServer, wait_for
from tests.pipeline.ops.test_runner import config, drained, read_results, scrape

BACKOFF_CAP_S, OPEN_TIMEOUT_S = 2.0, 5.0  # as tests.pipeline.ops.test_runner.config sets them


def test_camera_flaps_a_redis_freeze_and_a_replica_kill_lose_nothing(
        tmp_path: Path, rtsp_factory: Callable[..., RtspServer], shared_model: Path, video_dir: Path) -> None:
    server = rtsp_factory({"bikes": video_dir / "bikes.mp4"})
    ids = ["chaos-1", "chaos-2"]
    out = tmp_path / "results.jsonl"
    rng = random.Random(7)
    with LocalPipeline(config([{"id": i, "url": server.url("bikes"), "fps": 4} for i in ids], out, shared_model),
                       ray_cpus=2) as pipeline:
        ingest = pipeline.ingest
        assert ingest is not None and pipeline.redis_pid is not None

        def all_live() -> bool:
            return all(ingest.camera_state(i) == CameraState.LIVE for i in ids)

        assert wait_for(lambda: {r["stream"] for r in read_results(out)} == set(ids), 120)
        recoveries = []
        for _ in range(10):  # the camera server flaps: down and up at random 1-5 s intervals
            server.kill()
            time.sleep(rng.uniform(1, 5))
            server.start()
            t0 = time.monotonic()
            assert wait_for(all_live, BACKOFF_CAP_S + OPEN_TIMEOUT_S + 5), "a camera did not come back"
            recoveries.append(time.monotonic() - t0)
            time.sleep(rng.uniform(1, 5))
        os.kill(pipeline.redis_pid, signal.SIGSTOP)  # Redis frozen for 10 s while everything runs
        time.sleep(10)
        os.kill(pipeline.redis_pid, signal.SIGCONT)
        assert wait_for(lambda: len(read_results(out)) > 0 and all_live(), 60)
        time.sleep(3)
        before = len(read_results(out))
        [replica] = [a for a in ray.util.list_named_actors(all_namespaces=True)
                     if "SERVE_REPLICA" in a["name"] and "classifier" in a["name"]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)  # SIGKILL-like
        t0 = time.monotonic()
        assert wait_for(lambda: len(read_results(out)) > before + 20, 90), "no results after the replica kill"
        replica_back_s = time.monotonic() - t0
        server.kill()  # the cameras stop; the queues drain; the counts are final
        assert wait_for(lambda: drained(pipeline.metrics_port, ids), 90)
        m = scrape(pipeline.metrics_port)
        inferred_total = 0
        for i in ids:
            published = m[("vigil_pipeline_published_frames_total", i)]
            inferred = m[("vigil_pipeline_inferred_frames_total", i)]
            dropped = m[("vigil_pipeline_dropped_frames_total", i)]
            dead = m[("vigil_pipeline_dead_lettered_frames_total", i)]
            assert published == inferred + dropped + dead, (i, published, inferred, dropped, dead)
            inferred_total += int(inferred)
        assert wait_for(lambda: len(read_results(out)) >= inferred_total, 30)
        results = read_results(out)
        keys = [(r["stream"], r["frame_id"]) for r in results]
        assert len(set(keys)) == inferred_total  # every classified frame reached the sink: no result lost
    print(f"\nchaos: 10 flaps, recovery s {[round(r, 1) for r in recoveries]} (max {max(recoveries):.1f}); "
          f"results again {replica_back_s:.1f} s after the replica kill; {inferred_total} results, "
          f"{len(keys) - len(set(keys))} duplicate(s)")
    assert max(recoveries) <= BACKOFF_CAP_S + OPEN_TIMEOUT_S + 5
