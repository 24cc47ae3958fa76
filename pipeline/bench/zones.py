"""`vigil bench pipeline --zones N --classifiers K`: what zones and classifiers cost, measured in one run.

Three sustained measurements through bus -> Serve -> results (as :mod:`pipeline.bench.pipeline`'s, each
after a warm-up, one Serve deployment after the other, on the same cores and Redis):

1. **one zone, one classifier**: each frame is one crop, classified by the serving model and one head;
2. **one zone, K classifiers**: K heads on the serving model's backbone (grafted: one backbone pass per crop);
3. **N zones, K classifiers**: each frame carries N crops (the whole picture and N-1 zones).

Each reports frames/s and crops/s. What they must show: K heads cost at most 1.15x one (crops/s of 1 over
2), and N zones cost no more than N times one zone's inference (crops/s of 3 at least that of 2). Decoding is
not part of it (frames are decoded once, up front, as ingest decodes each camera frame once whatever its
zones): `vigil bench ingest` measures it.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bench.pipeline import PipelineBenchOptions, deploy, drain, publisher_specs, run_phase, spread_cameras
from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import ClassifierConfig, RedisConfig
from pipeline.inference.serving import APP_NAME, init_ray
from pipeline.ops.embedded_redis import EmbeddedRedis

#: The most a grafted head may add, per crop, to one classifier's cost (the issue's target).
HEADS_TARGET = 1.15


@dataclass(frozen=True)
class Head:
    """A classifier model for the bench: its file and classes."""

    path: Path
    classes: tuple[str, ...]


@dataclass(frozen=True)
class ZonesStep:
    zones: int
    classifiers: int
    frames_per_s: float

    @property
    def crops_per_s(self) -> float:
        return self.frames_per_s * self.zones


@dataclass(frozen=True)
class ZonesBench:
    steps: list[ZonesStep]  # 1 zone 1 classifier, 1 zone K classifiers, N zones K classifiers

    @property
    def heads_cost(self) -> float:
        """K heads' cost per crop as a multiple of one head's (1.0: free)."""
        one, many = self.steps[0], self.steps[1]
        return one.crops_per_s / many.crops_per_s if many.crops_per_s else float("inf")

    @property
    def zones_cost(self) -> float:
        """N zones' cost per crop as a multiple of one zone's (at most 1.0: no more than N times one zone's)."""
        one, many = self.steps[1], self.steps[2]
        return one.crops_per_s / many.crops_per_s if many.crops_per_s else float("inf")


def _classifiers(heads: list[Head], k: int) -> tuple[ClassifierConfig, ...]:
    return tuple(ClassifierConfig(id=f"head{i}", model=str(h.path), classes=list(h.classes))
                 for i, h in enumerate(heads[:k]))


def bench_zones(model: Path, frames: np.ndarray, opts: PipelineBenchOptions, heads: list[Head],
                zones: int) -> ZonesBench:
    """The three steps (see the module docstring) with ``len(heads)`` classifiers and ``zones`` crops a frame."""
    import ray
    from ray import serve

    backlog = 4 * opts.batch_size * opts.replicas
    steps: list[ZonesStep] = []
    with ExitStack() as stack:
        urls = [stack.enter_context(EmbeddedRedis(maxmemory_mb=2048)).url for _ in range(opts.redis_instances)]
        ids = spread_cameras(BusLayout(urls), opts.streams)
        clients = BusLayout(urls).connect(RedisConfig().socket_timeout_s)
        stack.callback(clients.close)
        init_ray(opts.ray_cpus)
        try:
            for n_zones, k in ((1, 1), (1, len(heads)), (zones, len(heads))):
                deploy(urls, ids, model, opts, _classifiers(heads, k))
                warm = min(5.0, opts.seconds / 2)
                for seconds in (warm, opts.seconds):  # warm up, then measure
                    rate = run_phase(publisher_specs(urls, ids, frames, opts, phase="saturate", seconds=seconds + 1,
                                         backlog=backlog, zones=n_zones), clients, ids, seconds)
                drain(clients, ids)
                steps.append(ZonesStep(n_zones, k, rate))
        finally:
            serve.delete(APP_NAME)
            ray.shutdown()
    return ZonesBench(steps)
