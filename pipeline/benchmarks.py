"""Benchmarks behind `vigil bench`: measured here, printed as figures and ratios, never asserted."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipeline.model.runtime import ModelRuntime


@dataclass(frozen=True)
class ModelBenchRow:
    batch_size: int
    images_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    batches: int


def bench_model(runtime: ModelRuntime, batch_sizes: list[int], seconds: float = 3.0,
                seed: int = 0) -> list[ModelBenchRow]:
    """Raw runtime throughput: ``classify`` on random model-sized frames for ``seconds`` per batch size.

    Random pixels (not zeros) so no kernel takes a data-dependent shortcut; one warm-up batch per
    size is excluded.
    """
    h, w = runtime.input_size
    rng = np.random.default_rng(seed)
    rows = []
    for b in batch_sizes:
        frames = rng.integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)
        runtime.classify(frames)
        latencies: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(latencies) < 3:
            t0 = time.perf_counter()
            runtime.classify(frames)
            latencies.append(time.perf_counter() - t0)
        total = sum(latencies)
        lat = np.asarray(latencies) * 1000
        rows.append(ModelBenchRow(b, b * len(latencies) / total, float(np.percentile(lat, 50)),
                                  float(np.percentile(lat, 95)), len(latencies)))
    return rows
