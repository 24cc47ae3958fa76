"""/metrics never waits on a frozen Redis: the last figures are served at once, marked stale."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from pipeline.core.bus_layout import BusLayout
from pipeline.core.keys import stats_key
from pipeline.ops.metrics import render
from pipeline.ops.pipeline_metrics import PipelineCollector
from tests.fixtures.services import RedisServer


def scrape(registry: CollectorRegistry) -> tuple[float, dict[str, float]]:
    t0 = time.monotonic()
    text = render(registry).decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    return time.monotonic() - t0, values


def test_a_frozen_redis_does_not_block_a_scrape(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    server.client().hset(stats_key("cam"), "inferred", 42)
    collector = PipelineCollector(BusLayout([server.url()]), ["cam"], timeout_s=5)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        took_s, m = scrape(registry)
        assert m['vigil_pipeline_inferred_frames_total{stream="cam"}'] == 42
        assert m["vigil_pipeline_stats_up"] == 1 and m["vigil_pipeline_stats_age_seconds"] == 0
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # frozen: connections stay open, nothing answers
        try:
            for _ in range(3):  # each scrape, not only the first, answers at once
                took_s, m = scrape(registry)
                assert took_s < 1.5, took_s  # the client's timeout is 5 s
                assert m["vigil_pipeline_stats_up"] == 0 and m["vigil_pipeline_stats_age_seconds"] > 0
                assert m['vigil_pipeline_inferred_frames_total{stream="cam"}'] == 42  # the last figures
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.client().hset(stats_key("cam"), "inferred", 43)
        # The read left in flight while Redis was frozen may answer first, with 42: wait for a read after the write.
        deadline = time.monotonic() + 10
        while ((m := scrape(registry)[1])["vigil_pipeline_stats_up"] == 0
               or m['vigil_pipeline_inferred_frames_total{stream="cam"}'] != 43) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert m["vigil_pipeline_stats_up"] == 1 and m['vigil_pipeline_inferred_frames_total{stream="cam"}'] == 43
    finally:
        registry.unregister(collector)
        collector.close()
