"""The batch size the model runs at, apart from the batch size Vigil reads at.

Reading from Redis wants big batches (one round trip for many frames); a CPU often wants small ones: on
2 cores MobileNetV2 classified 349 images/s at batch 1, 336 at 8 and 274 at 32 (activations of a big
batch fall out of the caches). So on CPU a replica measures, when it starts, which sub-batch is fastest
per image here, with its lanes running side by side as they will, and runs every batch in sub-batches of
that size. A GPU keeps the whole batch (its speed comes from big batches; CUDA graphs capture one shape).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

MEASURE_S = 0.08  # per candidate size and round; about a second and a half for the six sizes up to 32
ROUNDS = 2
_MIN_RUNS = 2


@dataclass(frozen=True)
class SubBatchChoice:
    """The chosen sub-batch and what each candidate measured (images/s, every lane together)."""

    size: int
    images_per_s: dict[int, float]

    def describe(self) -> str:
        rates = ", ".join(f"{n}: {r:.0f}/s" for n, r in self.images_per_s.items())
        return f"sub-batches of {self.size} (images/s per sub-batch size, measured at start: {rates})"


def candidates(batch_size: int) -> list[int]:
    """Powers of two up to ``batch_size``, and ``batch_size`` itself."""
    sizes, n = [], 1
    while n < batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, batch_size]


def fastest_sub_batch(run: Callable[[npt.NDArray[Any]], object], make_input: Callable[[int], npt.NDArray[Any]],
                      batch_size: int, lanes: int, measure_s: float = MEASURE_S) -> SubBatchChoice:
    """Time ``run`` on inputs of each candidate size, in ``lanes`` threads at once, in :data:`ROUNDS` rounds;
    the fastest per image wins (on a tie, the larger: fewer calls)."""
    inputs = {n: make_input(n) for n in candidates(batch_size)}
    for x in inputs.values():
        run(x)  # warm: the first run of a shape allocates
    rates = dict.fromkeys(inputs, 0.0)
    for _ in range(ROUNDS):  # each size's best of interleaved rounds: a burst of other load hits one round
        for n, x in inputs.items():
            rates[n] = max(rates[n], _images_per_s(run, x, max(1, lanes), measure_s))
    best = max(rates, key=lambda n: (rates[n], n))
    return SubBatchChoice(best, rates)


def _images_per_s(run: Callable[[npt.NDArray[Any]], object], x: npt.NDArray[Any], lanes: int,
                  measure_s: float) -> float:
    counts = [0] * lanes
    start = time.perf_counter()
    until = start + measure_s

    def lane(i: int) -> None:
        while time.perf_counter() < until or counts[i] < _MIN_RUNS:
            run(x)
            counts[i] += 1

    threads = [threading.Thread(target=lane, args=(i,), name=f"sub-batch-{i}") for i in range(1, lanes)]
    for t in threads:
        t.start()
    lane(0)
    for t in threads:
        t.join()
    return float(len(x) * sum(counts) / (time.perf_counter() - start))


def random_frames(n: int, height: int, width: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """``n`` uint8 RGB frames of random pixels (not zeros: no kernel takes a data-dependent shortcut)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
