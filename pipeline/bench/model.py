"""Benchmarks behind `vigil bench`: measured here, printed as figures and ratios, never asserted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.inference.runtime import ModelRuntime, RuntimeOptions, lane_share
from pipeline.inference.sub_batch import candidates, random_frames


@dataclass(frozen=True)
class ModelBenchRow:
    batch_size: int
    images_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    batches: int
    lanes: int = 1


def bench_model(runtime: ModelRuntime, batch_sizes: list[int], seconds: float = 3.0,
                seed: int = 0) -> list[ModelBenchRow]:
    """Raw runtime throughput: ``classify`` on random model-sized frames for ``seconds`` per batch size.

    As the inference loop runs it: ``batch_size`` frames classified at once, split evenly over
    ``runtime.lanes`` threads (on CPU, one single-threaded share per core). Random pixels (not
    zeros) so no kernel takes a data-dependent shortcut; one warm-up batch per size is excluded.
    Latency is per share.
    """
    h, w = runtime.input_size
    rows = []
    for b in batch_sizes:
        share = lane_share(b, runtime.lanes)
        frames = random_frames(share, h, w, seed)
        runtime.classify(frames)
        lanes: list[list[float]] = [[] for _ in range(runtime.lanes)]
        start = time.perf_counter()
        threads = [threading.Thread(target=_lane, args=(runtime, frames, start + seconds, lat)) for lat in lanes[1:]]
        for t in threads:
            t.start()
        _lane(runtime, frames, start + seconds, lanes[0])
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        lat = np.concatenate([np.asarray(x) for x in lanes]) * 1000
        rows.append(ModelBenchRow(b, share * len(lat) / wall, float(np.percentile(lat, 50)),
                                  float(np.percentile(lat, 95)), len(lat), len(lanes)))
    return rows


def _lane(runtime: ModelRuntime, frames: np.ndarray, until: float, latencies: list[float]) -> None:
    while time.perf_counter() < until or len(latencies) < 3:
        t0 = time.perf_counter()
        runtime.classify(frames)
        latencies.append(time.perf_counter() - t0)


def best_raw_rate(model: Path, batch_size: int, device: str = "auto", seconds: float = 1.0) -> ModelBenchRow:
    """The model alone on this machine's cores, as a replica runs it (its lanes side by side): the fastest
    of the powers of two up to ``batch_size``, each measured for ``seconds``."""
    with ModelRuntime(model, RuntimeOptions(device=device, batch_size=batch_size)) as runtime:
        rows = bench_model(runtime, candidates(batch_size), seconds)
    return max(rows, key=lambda r: r.images_per_s)
