"""/metrics never waits on a frozen Redis: the last figures are served at once, marked stale."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import ClassifierConfig
from pipeline.core.keys import stats_key
from pipeline.ops.metrics import render
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.results.classifier_states import StateSource, ZoneState
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


def test_classifier_states_and_zone_counts_are_exported_with_labels_bounded_by_the_config(
        redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    client = server.client()
    client.hset(stats_key("drive"), mapping={"published@gate": 10, "inferred@gate": 8, "dropped_stale@gate": 2,
                                             "published@gone": 5})
    state = ZoneState("open", 1000.5, 0.97).to_json()
    client.hset("vigil:states:events-0", mapping={"drive/gate/gate": state, "drive/gate/removed": state,
                                                  "drive/full/gate": state})
    gate = ClassifierConfig(id="gate", model="g.onnx", kind="state", classes=["closed", "open"], zones=["gate"])
    collector = PipelineCollector(BusLayout([server.url()]), {"drive": ("full", "gate")}, timeout_s=5,
                                  states=StateSource("events-0", (gate,)))
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        deadline = time.monotonic() + 10
        while (m := scrape(registry)[1]).get("vigil_pipeline_stats_up") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # the first read may take longer than a scrape waits (connecting)
    finally:
        collector.close()
    def state(value: str) -> float:  # the text format writes labels in name order
        return m[f'vigil_classifier_state{{classifier="gate",state="{value}",stream="drive",zone="gate"}}']

    assert (state("open"), state("closed"), state("unknown")) == (1, 0, 0)
    assert m['vigil_classifier_state_since_timestamp_seconds{classifier="gate",stream="drive",zone="gate"}'] == 1000.5
    # Only what the config has: no classifier on the whole picture, none no longer configured, no removed zone.
    assert len([k for k in m if k.startswith("vigil_classifier_state")]) == 4
    assert m['vigil_pipeline_zone_published_crops_total{stream="drive",zone="gate"}'] == 10
    assert m['vigil_pipeline_zone_dropped_crops_total{reason="stale",stream="drive",zone="gate"}'] == 2
    assert not [k for k in m if 'zone="gone"' in k]
