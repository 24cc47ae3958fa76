"""Adaptive sampling end to end: real RTSP cameras, real Redis, the real model behind a throttle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pipeline.bus.reader import FrameConsumer
from pipeline.core.keys import stats_key
from pipeline.inference.loop import InferenceLoop
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.ops.ingest_service import IngestService
from tests.fixtures.services import RedisServer, RtspServer
from tests.pipeline.ops.ingest_helpers import make_config, wait_until
from tests.pipeline.options import consumer_options, loop_options, writer_for

CAMERAS = ("as-a", "as-b")


class Throttled:
    """The real runtime, held to ``capacity_fps`` frames a second: an inference that cannot keep up."""

    def __init__(self, runtime: ModelRuntime, capacity_fps: float) -> None:
        self.runtime, self.capacity_fps = runtime, capacity_fps

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def classify(self, frames: np.ndarray, where: Any = None) -> Any:
        t0 = time.monotonic()
        result = self.runtime.classify(frames, where)
        time.sleep(max(0.0, len(frames) / self.capacity_fps - (time.monotonic() - t0)))
        return result


def inferred(client: redis.Redis) -> dict[str, int]:
    return {stream_id: int(client.hget(stats_key(stream_id), "inferred") or 0) for stream_id in CAMERAS}


def stale(client: redis.Redis) -> dict[str, int]:
    return {stream_id: int(client.hget(stats_key(stream_id), "dropped_stale") or 0) for stream_id in CAMERAS}


def effective(worker: IngestService) -> dict[str, float]:
    return {c["id"]: c["fps"]["effective"] for c in worker.status()["cameras"]}


@pytest.mark.alone
def test_sampling_follows_capacity_with_equal_shares(rtsp_server: RtspServer,
                                                     redis_factory: Callable[..., RedisServer],
                                                     shared_model: Path) -> None:
    server = redis_factory()
    client = server.client()
    cfg = make_config([{"id": stream_id, "url": rtsp_server.url("bikes"), "fps": 25} for stream_id in CAMERAS],
                      server.url())
    stop = threading.Event()
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=4, lanes=1)) as rt, \
            FrameConsumer(consumer_options([server.url()], "r1", list(CAMERAS))) as consumer, \
            IngestService(cfg) as worker:
        model = Throttled(rt, capacity_fps=12)  # two cameras offer 50 frames/s
        loop = InferenceLoop(model, consumer, writer_for(consumer), loop_options(batch_size=4))  # type: ignore[arg-type]
        runner = threading.Thread(target=loop.run, args=(stop,))
        runner.start()
        try:
            wait_until(lambda: all(r < 12 for r in effective(worker).values()), 20, "sampling to fall")
            time.sleep(5)  # settle
            before, t0 = inferred(client), time.monotonic()
            samples = []
            while time.monotonic() - t0 < 12:
                samples.append(effective(worker))
                time.sleep(0.25)
            served = {stream_id: n - before[stream_id] for stream_id, n in inferred(client).items()}
            rates = {stream_id: sum(s[stream_id] for s in samples) / len(samples)
                     for stream_id in CAMERAS}  # mean sampling rates
            assert min(served.values()) > 0 and max(served.values()) / min(served.values()) <= 1.25, served
            assert sum(served.values()) / (time.monotonic() - t0) > 0.7 * 12, served  # inference kept busy
            assert sum(rates.values()) < 1.5 * 12, rates  # ingest samples little more than inference takes
            model.capacity_fps = 10_000  # capacity is back
            wait_until(lambda: all(r == 25 for r in effective(worker).values()), 25, "sampling back at 25 fps")
        finally:
            stop.set()
            runner.join(30)
    assert not runner.is_alive()
