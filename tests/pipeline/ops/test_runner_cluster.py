"""`vigil run` on a Redis Cluster of three masters (with a password): the shared slideshow end to end with
each segment's label in order, other cameras beside it on other masters, and the accounting identity exact
per camera once the cameras stop and the queues drain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import RedisConfig
from pipeline.ops.runner import LocalPipeline
from tests.chaos.test_faults import identity_and_delivery
from tests.fixtures.redis_cluster import RedisCluster3
from tests.fixtures.services import RtspServer, wait_for
from tests.pipeline.ops.test_runner import assert_segments_in_order, config, drained, read_results


def test_slideshow_on_a_redis_cluster_keeps_its_labels_and_the_identity(
        tmp_path: Path, redis_cluster: RedisCluster3, rtsp_factory: Callable[..., RtspServer], *,
        shared_model: Path, video_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    expected = [s["expected_top1"] for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]]
    server = rtsp_factory({"slideshow": video_dir / "slideshow.mp4", "bikes": video_dir / "bikes.mp4"})
    ids = ["slides", "bikes-1", "bikes-2", "bikes-3"]
    streams = [{"id": "slides", "url": server.url("slideshow"), "fps": 5}]
    streams += [{"id": i, "url": server.url("bikes"), "fps": 2} for i in ids[1:]]
    out = tmp_path / "results.jsonl"
    base = config(streams, out, shared_model)
    bus = RedisConfig(urls=[redis_cluster.url(2), redis_cluster.url(0)], mode="cluster", socket_timeout_s=2.0)
    cfg = base.model_copy(update={"redis": bus})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert wait_for(lambda: sum(r["stream"] == "slides" for r in read_results(out)) >= 75, 150), \
            f"only {len(read_results(out))} results"
        assert pipeline.console is not None  # the console follows every shard's results stream
        view = httpx.get(f"{pipeline.console.url}api/v1/streams/slides", timeout=10).json()
        server.kill()  # the cameras stop; the queues drain; the counts are final
        assert wait_for(lambda: drained(pipeline.metrics_port, ids), 90)
        _, inferred, _ = identity_and_delivery(pipeline.metrics_port, ids, out)
    assert view["label"]["name"] in expected and view["frames"]["published"] > 0
    assert_segments_in_order([r for r in read_results(out) if r["stream"] == "slides"], expected)
    assert {r["stream"] for r in read_results(out)} == set(ids)
    # Every camera's keys carry its shard's hash tag, and the cameras are spread over the masters.
    layout = BusLayout.from_config(bus)
    keys = redis_cluster.keys()
    for stream_id in ids:
        names = layout.keys_of(stream_id)
        assert {names.frames(stream_id), names.stats(stream_id), names.results} <= keys, (stream_id, sorted(keys))
    assert not any(k.startswith(("vigil:frames:", "vigil:stats:")) or k == "vigil:results" for k in keys)
    assert len({redis_cluster.node_of(layout.keys_of(stream_id).frames(stream_id)) for stream_id in ids}) >= 2
    print(f"\nredis cluster: {inferred} results over {len({layout.shard_of(s) for s in ids})} shards")
    assert redis_cluster.password not in caplog.text
