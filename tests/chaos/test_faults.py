"""Chaos under `vigil run`'s pipeline (Redis, Ray Serve, ingest, sinks): faults one after another, then the
exact identity per camera and no lost result. Two runs: the camera server flapping, Redis frozen and the
replica killed (embedded Redis); then, with an external Redis on AOF and the sink worker in its own
process, hung cameras beside good ones, poison entries, Redis killed with SIGKILL and restarted, and the
sink worker killed and restarted under a new host name. Bounded in time; the figures are printed (-s)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import redis
import yaml

from pipeline.core.keys import RESULTS_KEY, frames_key, sink_group, stats_key
from pipeline.ingest.camera import CameraState
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.services import RedisServer, RtspServer, wait_for
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
        for _ in range(6):  # the camera server flaps: down and up at random 1-3 s intervals
            server.kill()
            time.sleep(rng.uniform(1, 3))
            server.start()
            t0 = time.monotonic()
            assert wait_for(all_live, BACKOFF_CAP_S + OPEN_TIMEOUT_S + 5), "a camera did not come back"
            recoveries.append(time.monotonic() - t0)
            time.sleep(rng.uniform(1, 3))
        os.kill(pipeline.redis_pid, signal.SIGSTOP)  # Redis frozen for 6 s (over socket_timeout_s) while all runs
        time.sleep(6)
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
        _, inferred_total, duplicates = identity_and_delivery(pipeline.metrics_port, ids, out)
    print(f"\nchaos: 6 flaps, recovery s {[round(r, 1) for r in recoveries]} (max {max(recoveries):.1f}); "
          f"results again {replica_back_s:.1f} s after the replica kill; {inferred_total} results, "
          f"{duplicates} duplicate(s)")
    assert max(recoveries) <= BACKOFF_CAP_S + OPEN_TIMEOUT_S + 5


def identity_and_delivery(port: int, ids: list[str], out: Path) -> tuple[dict[tuple[str, str], float], int, int]:
    """Assert the identity per camera and that every classified frame reached the file; (metrics, results,
    duplicates)."""
    m = scrape(port)
    inferred_total = 0
    for i in ids:
        published = m.get(("vigil_pipeline_published_frames_total", i), 0.0)
        inferred = m.get(("vigil_pipeline_inferred_frames_total", i), 0.0)
        dropped = m.get(("vigil_pipeline_dropped_frames_total", i), 0.0)
        dead = m.get(("vigil_pipeline_dead_lettered_frames_total", i), 0.0)
        assert published == inferred + dropped + dead, (i, published, inferred, dropped, dead)
        inferred_total += int(inferred)
    assert wait_for(lambda: len({(r["stream"], r["frame_id"]) for r in read_results(out)}) >= inferred_total, 60)
    keys = [(r["stream"], r["frame_id"]) for r in read_results(out)]
    assert len(set(keys)) == inferred_total  # no result lost (and none invented)
    return m, inferred_total, len(keys) - len(set(keys))


class SinkProcess:
    """`vigil sink` in a UTS namespace of its own, so that its host name (its consumer name) is ``host``."""

    def __init__(self, config: Path, host: str, log: Path) -> None:
        unshare = ["unshare", "-u"] if os.geteuid() == 0 else ["unshare", "-r", "-u"]
        script = 'hostname "$1" && exec "$0" -m pipeline.cli sink --config "$2"'
        with log.open("ab") as f:
            self.proc = subprocess.Popen([*unshare, "sh", "-c", script, sys.executable, host, str(config)],
                                         stdout=f, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL to `sh`, which exec'd the sink worker: the worker itself
        self.proc.wait(10)


def poison(client: redis.Redis, stream_id: str, n: int) -> None:
    """Entries no decoder accepts, written (and counted as published) the way a broken publisher would."""
    for i in range(n):
        with client.pipeline(transaction=True) as p:
            p.xadd(frames_key(stream_id), {"junk": f"not a frame {i}"})
            p.hincrby(stats_key(stream_id), "published", 1)
            p.execute()


def test_hung_cameras_poison_a_redis_kill_9_and_a_sink_kill_under_a_new_name_lose_nothing(  # noqa: PLR0917
        tmp_path: Path, redis_factory: Callable[..., RedisServer], rtsp_factory: Callable[..., RtspServer],
        silent_port: int, shared_model: Path, video_dir: Path) -> None:
    store = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    server = rtsp_factory({"bikes": video_dir / "bikes.mp4"})
    good, hung = ["aof-1", "aof-2"], [f"hung-{i}" for i in range(5)]
    streams: list[dict[str, Any]] = [{"id": i, "url": server.url("bikes"), "fps": 4} for i in good]
    streams += [{"id": h, "url": f"rtsp://127.0.0.1:{silent_port}/cam", "fps": 4} for h in hung]
    out = tmp_path / "results.jsonl"
    base = config(streams, out, shared_model)
    run_cfg = base.model_copy(update={"redis": base.redis.model_copy(update={"urls": [store.url()]}), "sinks": []})
    sink_cfg = tmp_path / "sink.yaml"
    sink_cfg.write_text(yaml.safe_dump({
        "redis": {"urls": [store.url()]}, "streams": streams, "metrics": {"port": 0},
        "sinks": [{"type": "jsonl", "name": "chaos", "path": str(out), "claim_idle_s": 3, "backoff_cap_s": 1}]}))
    client = store.client()
    sink = SinkProcess(sink_cfg, "sink-pod-a", tmp_path / "sink.log")
    try:
        with LocalPipeline(run_cfg, ray_cpus=2) as pipeline:
            assert wait_for(lambda: {r["stream"] for r in read_results(out)} == set(good), 120), (
                "no results beside 5 hung cameras")
            poison(client, "aof-1", 3)
            assert wait_for(lambda: scrape(pipeline.metrics_port).get(
                ("vigil_pipeline_dead_lettered_frames_total", "aof-1"), 0) >= 3, 30)

            before = len(read_results(out))
            assert store.proc is not None
            store.proc.kill()  # Redis SIGKILL: only its append-only file survives
            store.proc.wait(10)
            time.sleep(2)
            store.start()  # same port, same directory: the AOF is replayed
            t0 = time.monotonic()
            assert wait_for(lambda: len(read_results(out)) > before + 20, 90), "no results after the Redis restart"
            redis_back_s = time.monotonic() - t0

            sink.kill()  # the sink worker dies holding results it read and did not acknowledge
            time.sleep(3)
            before = len(read_results(out))
            sink = SinkProcess(sink_cfg, "sink-pod-b", tmp_path / "sink.log")  # the pod again, a new name
            t0 = time.monotonic()
            assert wait_for(lambda: len(read_results(out)) > before + 20, 60), "no results from the new sink pod"
            sink_back_s = time.monotonic() - t0

            server.kill()  # the cameras stop; the queues drain; the counts are final
            assert wait_for(lambda: drained(pipeline.metrics_port, good), 90)
            m, results, duplicates = identity_and_delivery(pipeline.metrics_port, [*good, *hung], out)
            assert m[("vigil_pipeline_dead_lettered_frames_total", "aof-1")] >= 3
            assert all(m.get(("vigil_pipeline_published_frames_total", h), 0) == 0 for h in hung)
            # The new pod took over the old pod's unacknowledged results, then removed the dead consumer.
            group = sink_group("chaos")
            assert wait_for(lambda: [c["name"] for c in client.xinfo_consumers(RESULTS_KEY, group)] == [b"sink-pod-b"],
                            30), client.xinfo_consumers(RESULTS_KEY, group)
    finally:
        sink.kill()
        client.close()
    print(f"\nchaos (AOF Redis, sink process): results again {redis_back_s:.1f} s after Redis kill -9 and restart, "
          f"{sink_back_s:.1f} s after the sink pod came back under a new name; {results} results, {duplicates} "
          "duplicate(s) at the JSONL sink (at-least-once after a SIGKILL)")
