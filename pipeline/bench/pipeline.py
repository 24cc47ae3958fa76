"""`vigil bench pipeline`: sustained frames/s through bus -> Serve -> results, against the raw runtime.

Both figures are measured in the same run, on the same cores:

1. **raw**: `vigil bench model`'s figure for the same batch size, in this process (the baseline);
2. **sustained**: frames published on the frame bus (the ingest worker's publisher, ``FrameBus``)
   for several cameras, consumed by the Ray Serve replica(s) with their consumer group, classified,
   and their results written to the results stream, with the publisher keeping a backlog so the
   replicas never wait; the rate at which results appear is the sustained throughput;
3. **latency**: then frames are published at 80% of that rate, paced like cameras, and the frame
   age of each result (capture -> result written) gives p50/p95/p99.

Camera decoding is not part of it (frames are decoded and resized once, up front): its cost is what
`vigil bench ingest` measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.model import bench_model
from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.config import InferenceConfig, StreamConfig, VigilConfig
from pipeline.core.keys import RESULTS_KEY, stats_key
from pipeline.core.redis_clients import connect
from pipeline.core.redis_config import RedisConfig
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.inference.serving import APP_NAME, ServeSettings, build_app, init_ray
from pipeline.ops.embedded_redis import EmbeddedRedis
from pipeline.results.record import ResultRecord


@dataclass(frozen=True)
class PipelineBench:
    raw_fps: float
    sustained_fps: float
    ratio: float
    paced_fps: float
    age_ms_p50: float
    age_ms_p95: float
    age_ms_p99: float
    frames: int


def _done(client: Any, streams: list[str]) -> int:
    """Frames no longer queued: classified, or dropped as stale (which only an overloaded machine does)."""
    with client.pipeline(transaction=False) as p:
        for s in streams:
            p.hmget(stats_key(s), "inferred", "dropped_stale")
        return sum(int(n or 0) for pair in p.execute() for n in pair)


def _saturate(bus: FrameBus, client: Any, frames: np.ndarray, streams: list[str], *, seconds: float,
              backlog: int) -> float:
    """Publish as fast as the replicas consume (keeping ``backlog`` queued); return results/s.

    The queue is topped up every 20 ms: polling Redis harder would steal CPU from the replicas
    being measured (a real ingest worker does not poll at all).
    """
    published, seq = 0, 0
    t0 = time.perf_counter()
    start_done = _done(client, streams)
    while time.perf_counter() - t0 < seconds:
        rounds = (backlog - (published - (_done(client, streams) - start_done))) // len(streams)
        for _ in range(max(0, rounds)):
            for s in streams:
                bus.publish(FrameMessage(s, seq, time.time_ns(), frames[seq % len(frames)]))
                published += 1
            seq += 1
        time.sleep(0.02)
    done = _done(client, streams) - start_done
    return done / (time.perf_counter() - t0)


def _paced(bus: FrameBus, client: Any, frames: np.ndarray, streams: list[str], *, rate: float,
           seconds: float) -> list[float]:
    """Publish at ``rate`` frames/s in total; return the ages (ms) of the results of those frames."""
    start_id = client.xrevrange(RESULTS_KEY, count=1)
    last_id = start_id[0][0] if start_id else b"0-0"
    interval, seq, t0 = len(streams) / rate, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        target = t0 + seq * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for s in streams:
            bus.publish(FrameMessage(s, 10_000_000 + seq, time.time_ns(), frames[seq % len(frames)]))
        seq += 1
    _drain(client, streams)
    entries = client.xrange(RESULTS_KEY, min=b"(" + last_id)
    records = [ResultRecord.from_fields(f) for _, f in entries]
    return [r.total_ms for r in records if r.seq >= 10_000_000]


def _drain(client: Any, streams: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _backlog(client, streams) and time.monotonic() < deadline:
        time.sleep(0.05)


def _backlog(client: Any, streams: list[str]) -> bool:
    from pipeline.core.keys import INFERENCE_GROUP, frames_key

    for s in streams:
        g = [x for x in client.xinfo_groups(frames_key(s)) if x["name"].decode() == INFERENCE_GROUP]
        if g and (int(g[0].get("lag") or 0) or int(g[0].get("pending") or 0)):
            return True
    return False


def _raw_fps(model: Path, batch_size: int, seconds: float) -> float:
    """The baseline: `vigil bench model`'s best raw frames/s on these cores, in this process.

    Measured both ways the runtime can use the cores: the batch split into single-threaded lanes
    side by side (the default on CPU, as the replicas run it) and the whole batch over every core
    (onnxruntime's intra-op threads). The better of the two is the baseline, so the choice of
    threading can never flatter the ratio.
    """
    best = 0.0
    for lanes in (0, 1):
        opts = RuntimeOptions(device="cpu", batch_size=batch_size, lanes=lanes)
        with ModelRuntime(model, opts) as rt:
            best = max(best, bench_model(rt, [batch_size], seconds / 2)[0].images_per_s)
    return best


def bench_pipeline(model: Path, frames: np.ndarray, *, batch_size: int, seconds: float, streams: int,
                   replicas: int, ray_cpus: int | None) -> PipelineBench:
    import ray
    from ray import serve

    raw_before = _raw_fps(model, batch_size, seconds / 2)
    ids = [f"bench-{i}" for i in range(streams)]
    with EmbeddedRedis(maxmemory_mb=2048) as r:
        client = connect(r.url, RedisConfig().socket_timeout_s)
        init_ray(ray_cpus)
        try:
            cfg = VigilConfig(streams=[StreamConfig(id=i, url="rtsp://127.0.0.1/bench") for i in ids],  # published here
                              redis=RedisConfig(urls=[r.url]),
                              inference=InferenceConfig(device="cpu", batch_size=batch_size, replicas=replicas))
            settings = ServeSettings.from_config(cfg, model, replicas_per_machine=replicas)
            # No HTTP proxy: frames never cross HTTP, and an idle proxy would still take CPU here.
            serve.start(proxy_location="Disabled")
            serve.run(build_app(settings, replicas=replicas, num_cpus=0.5, num_gpus=0), name=APP_NAME,
                      route_prefix="/")
            # The default stream length (BusOptions.maxlen): the backlog kept below never reaches it, and
            # longer streams would make Redis fault in fresh memory for every frame instead of reusing it.
            with FrameBus(BusOptions.from_config(cfg)) as bus:
                _saturate(bus, client, frames, ids, seconds=min(5.0, seconds / 2), backlog=4 * batch_size)  # warm-up
                sustained = _saturate(bus, client, frames, ids, seconds=seconds, backlog=4 * batch_size)
                _drain(client, ids)  # frames left queued by saturation would age the first paced ones
                ages = _paced(bus, client, frames, ids, rate=0.8 * sustained, seconds=seconds)
        finally:
            # Delete the app (replicas finish their batch), then stop Ray. serve.shutdown() would make
            # the raylet print a spurious "ServeController.graceful_shutdown failed" on stdout.
            serve.delete(APP_NAME)
            ray.shutdown()
            client.close()
    # The baseline is measured before and after (machine noise on shared hosts is several %), averaged.
    raw = (raw_before + _raw_fps(model, batch_size, seconds / 2)) / 2
    a = np.asarray(ages) if ages else np.zeros(1)
    return PipelineBench(raw, sustained, sustained / raw, 0.8 * sustained, float(np.percentile(a, 50)),
                         float(np.percentile(a, 95)), float(np.percentile(a, 99)), len(ages))
