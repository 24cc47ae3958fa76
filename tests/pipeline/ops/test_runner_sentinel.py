"""`vigil run` on a Sentinel-managed Redis whose primary is SIGKILLed mid-run: the Sentinels promote the
replica, the pipeline follows it, and no acknowledged result is lost (a transaction replicates whole or not
at all: a frame whose result did not reach the replica is still pending there, and is classified again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core.config import RedisConfig
from pipeline.ops.runner import LocalPipeline
from tests.chaos.test_faults import identity_and_delivery
from tests.fixtures.redis_ha import SentinelSet
from tests.fixtures.services import RtspServer, wait_for
from tests.pipeline.ops.test_runner import config, drained, read_results


def test_primary_killed_mid_run_fails_over_and_loses_no_result(
        tmp_path: Path, sentinel_set: SentinelSet, rtsp_factory: Callable[..., RtspServer], *, shared_model: Path,
        video_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = rtsp_factory({"bikes": video_dir / "bikes.mp4"})
    ids = ["ha-1", "ha-2"]
    out = tmp_path / "results.jsonl"
    base = config([{"id": i, "url": server.url("bikes"), "fps": 4} for i in ids], out, shared_model)
    cfg = base.model_copy(update={"redis": RedisConfig(urls=[sentinel_set.url()], socket_timeout_s=2.0)})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert wait_for(lambda: len(read_results(out)) >= 20, 120)
        old = sentinel_set.primary.port
        sentinel_set.kill_primary()
        t0 = time.monotonic()
        assert wait_for(lambda: sentinel_set.primary_port() == sentinel_set.replica.port, 30)
        promoted_s = time.monotonic() - t0
        before = len(read_results(out))
        assert wait_for(lambda: len(read_results(out)) >= before + 20, 90), "no results after the failover"
        resumed_s = time.monotonic() - t0
        server.kill()  # the cameras stop; the queues drain on the promoted replica; the counts are final
        assert wait_for(lambda: drained(pipeline.metrics_port, ids), 90)
        _, inferred, duplicates = identity_and_delivery(pipeline.metrics_port, ids, out)
    print(f"\nsentinel: primary :{old} killed; replica promoted in {promoted_s:.1f} s, results again after "
          f"{resumed_s:.1f} s; {inferred} results, {duplicates} duplicate(s)")
    for secret in (sentinel_set.password, sentinel_set.sentinel_password):
        assert secret not in caplog.text
