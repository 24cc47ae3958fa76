"""`vigil bench pipeline`: sustained frames/s through bus -> Serve -> results, against the raw runtime.

Both figures are measured in the same run, on the same cores:

1. **raw**: `vigil bench model`'s figure for the same batch size, in this process (the baseline);
2. **sustained**: frames published on the frame bus (the ingest worker's publisher, ``FrameBus``)
   for several cameras, consumed by the Ray Serve replica(s) with their consumer group, classified,
   and their results written to the results stream, with the publisher keeping a backlog so the
   replicas never wait; the rate at which results appear is the sustained throughput;
3. **latency**: then frames are published at 80% of that rate, paced like cameras, and the frame
   age of each result (capture -> result written) gives p50/p95/p99.

The frames go through ``redis_instances`` Redis instances (cameras pinned over them, as with several
``redis.urls``) and are put there by ``publishers`` processes (:mod:`pipeline.bench.publishers`), raw or
JPEG (``frame_encoding``), so one GPU can be fed at its rate; ``device: cuda`` runs the baseline and
the replicas on the GPU (``tensorrt`` with the TensorRT provider).

Camera decoding is not part of it (frames are decoded and resized once, up front): its cost is what
`vigil bench ingest` measures.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.bench.model import bench_model
from pipeline.bench.publishers import PACED_SEQ, Phase, PublisherSpec, done_frames, publish
from pipeline.bus.wire import Encoding
from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import (
    ClassifierConfig,
    GpuOptions,
    InferenceConfig,
    RedisConfig,
    StreamConfig,
    VigilConfig,
)
from pipeline.core.errors import VigilError
from pipeline.core.keys import INFERENCE_GROUP
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.inference.serving import APP_NAME, ServeSettings, build_app, init_ray
from pipeline.ops.embedded_redis import EmbeddedRedis
from pipeline.results.record import ResultRecord


@dataclass(frozen=True)
class PipelineBenchOptions:
    batch_size: int = 32
    seconds: float = 15.0
    streams: int = 4
    replicas: int = 1
    ray_cpus: int | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    tensorrt: bool = False
    redis_instances: int = 1
    publishers: int = 1
    frame_encoding: Encoding = "raw"


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
    results_per_instance: list[int]  # of the paced phase: the cameras' results spread over the instances


def drain(clients: BusClients, streams: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _backlog(clients, streams) and time.monotonic() < deadline:
        time.sleep(0.05)


def _backlog(clients: BusClients, streams: list[str]) -> bool:
    for s in streams:
        shard = clients.layout.shard_of(s)
        groups = clients.client(shard).xinfo_groups(clients.keys(shard).frames(s))
        g = [x for x in groups if x["name"].decode() == INFERENCE_GROUP]
        if g and (int(g[0].get("lag") or 0) or int(g[0].get("pending") or 0)):
            return True
    return False


def _raw_fps(model: Path, opts: PipelineBenchOptions, seconds: float) -> float:
    """The baseline: `vigil bench model`'s best raw frames/s on these cores (or this GPU), in this process.

    On CPU, measured both ways the runtime can use the cores: the batch split into single-threaded lanes
    side by side (the default, as the replicas run it) and the whole batch over every core (onnxruntime's
    intra-op threads). The better of the two is the baseline, so the choice of threading can never
    flatter the ratio. On CUDA, one lane, the replicas' way.
    """
    best = 0.0
    gpu = GpuOptions(tensorrt=opts.tensorrt)
    for lanes in ((0, 1) if opts.device == "cpu" else (1,)):
        ropts = RuntimeOptions(device=opts.device, batch_size=opts.batch_size, lanes=lanes, gpu=gpu)
        with ModelRuntime(model, ropts) as rt:
            best = max(best, bench_model(rt, [opts.batch_size], seconds / 2)[0].images_per_s)
    return best


def run_phase(specs: list[PublisherSpec], clients: BusClients, streams: list[str], window_s: float) -> float:
    """Run one publisher process per spec, started together; the frames/s classified in the ``window_s``
    after the start (the publishers run on a little longer, so the window is saturated to its end)."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds Ray and Redis clients
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=publish, args=(spec, ready, go), name=f"bench-publisher-{i}", daemon=True)
             for i, spec in enumerate(specs)]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        done0, t0 = done_frames(clients, streams), time.perf_counter()
        time.sleep(window_s)
        rate = (done_frames(clients, streams) - done0) / (time.perf_counter() - t0)
        for proc in procs:
            proc.join(max(specs[0].seconds, window_s) + 60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    if any(proc.exitcode != 0 for proc in procs):
        raise VigilError(f"a bench publisher failed (exit codes {[p.exitcode for p in procs]})")
    return rate


def publisher_specs(urls: list[str], ids: list[str], frames: np.ndarray, opts: PipelineBenchOptions, *,
                    phase: Phase, seconds: float, backlog: int = 0, rate: float = 0.0,
                    zones: int = 1) -> list[PublisherSpec]:
    """The cameras dealt over the publishers, each with its share of the backlog or the rate."""
    out = []
    for i in range(opts.publishers):
        cameras = ids[i::opts.publishers]
        if cameras:
            share = len(cameras) / len(ids)
            out.append(PublisherSpec(urls=urls, cameras=cameras, frames=frames, encoding=opts.frame_encoding,
                                     phase=phase, seconds=seconds, backlog=max(1, int(backlog * share)),
                                     rate=rate * share, zones=zones))
    return out


def _ages_since(clients: BusClients, last_ids: list[bytes]) -> tuple[list[float], list[int]]:
    """Frame ages (ms) of the paced frames' results, and the results each instance holds after ``last_ids``."""
    ages, counts = [], []
    for shard, client, keys in clients:
        records = [ResultRecord.from_fields(f) for _, f in client.xrange(keys.results, min=b"(" + last_ids[shard])]
        counts.append(len(records))
        ages += [r.total_ms for r in records if r.seq >= PACED_SEQ]
    return ages, counts


def spread_cameras(layout: BusLayout, count: int) -> list[str]:
    """``count`` camera ids dealt evenly over the layout's instances (pinning hashes the instances' random ports:
    with ``bench-0..3`` over two instances, one in eight runs would put every camera on one of them)."""
    per_shard = -(-count // len(layout))
    taken: dict[int, int] = {}
    ids: list[str] = []
    for i in itertools.count():
        name = f"bench-{i}"
        shard = layout.shard_of(name)
        if taken.get(shard, 0) < per_shard:
            taken[shard] = taken.get(shard, 0) + 1
            ids.append(name)
            if len(ids) == count:
                return ids
    raise AssertionError("unreachable")


def deploy(urls: list[str], ids: list[str], model: Path, opts: PipelineBenchOptions,
            classifiers: tuple[ClassifierConfig, ...] = ()) -> None:
    from ray import serve

    cfg = VigilConfig(streams=[StreamConfig(id=i, url="rtsp://127.0.0.1/bench") for i in ids],  # published here
                      redis=RedisConfig(urls=urls, frame_encoding=opts.frame_encoding),
                      inference=InferenceConfig(device=opts.device, batch_size=opts.batch_size, replicas=opts.replicas,
                                                gpu=GpuOptions(tensorrt=opts.tensorrt)),
                      classifiers=list(classifiers))
    settings = ServeSettings.from_config(cfg, model, replicas_per_machine=opts.replicas)
    # No HTTP proxy: frames never cross HTTP, and an idle proxy would still take CPU here.
    serve.start(proxy_location="Disabled")
    gpus = 1 / opts.replicas if opts.device == "cuda" else 0
    serve.run(build_app(settings, replicas=opts.replicas, num_cpus=0.5, num_gpus=gpus), name=APP_NAME,
              route_prefix="/")


def bench_pipeline(model: Path, frames: np.ndarray, opts: PipelineBenchOptions) -> PipelineBench:
    import ray
    from ray import serve

    raw_before = _raw_fps(model, opts, opts.seconds / 2)
    backlog = 4 * opts.batch_size * opts.replicas
    with ExitStack() as stack:
        urls = [stack.enter_context(EmbeddedRedis(maxmemory_mb=2048)).url for _ in range(opts.redis_instances)]
        layout = BusLayout(urls)
        ids = spread_cameras(layout, opts.streams)
        clients = layout.connect(RedisConfig().socket_timeout_s)
        stack.callback(clients.close)
        init_ray(opts.ray_cpus)
        try:
            deploy(urls, ids, model, opts)
            warm = min(5.0, opts.seconds / 2)
            run_phase(publisher_specs(urls, ids, frames, opts, phase="saturate", seconds=warm, backlog=backlog),
                      clients, ids, warm)
            sustained = run_phase(publisher_specs(urls, ids, frames, opts, phase="saturate",
                                      seconds=opts.seconds + 1, backlog=backlog), clients, ids, opts.seconds)
            drain(clients, ids)  # frames left queued by saturation would age the first paced ones
            last = [(client.xrevrange(keys.results, count=1) or [(b"0-0", None)])[0][0] for _, client, keys in clients]
            paced = publisher_specs(urls, ids, frames, opts, phase="paced", seconds=opts.seconds,
                                    rate=0.8 * sustained)
            run_phase(paced, clients, ids, opts.seconds)
            drain(clients, ids)
            ages, counts = _ages_since(clients, last)
        finally:
            # Delete the app (replicas finish their batch), then stop Ray. serve.shutdown() would make
            # the raylet print a spurious "ServeController.graceful_shutdown failed" on stdout.
            serve.delete(APP_NAME)
            ray.shutdown()
    # The baseline is measured before and after (machine noise on shared hosts is several %), averaged.
    raw = (raw_before + _raw_fps(model, opts, opts.seconds / 2)) / 2
    a = np.asarray(ages) if ages else np.zeros(1)
    return PipelineBench(raw, sustained, sustained / raw, 0.8 * sustained, float(np.percentile(a, 50)),
                         float(np.percentile(a, 95)), float(np.percentile(a, 99)), len(ages), counts)
