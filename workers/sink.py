"""`vigil sink`: the sink service as a process, with /metrics (sinks and pipeline accounting), until SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from pipeline.core.bus_layout import BusLayout
from pipeline.core.camera_store import StreamStore, camera_ids
from pipeline.core.config import load_config
from pipeline.core.errors import VigilError
from pipeline.ops.metrics import SinkMetrics
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.ops.ports import check_ports_free
from pipeline.ops.sink_service import SinkService


def run(config_path: str, consumer: str | None = None, metrics_port: int | None = None) -> None:
    """Run every sink, plus /metrics (sinks and pipeline accounting), until SIGTERM/SIGINT.

    ``metrics_port`` (``--metrics-port``) replaces ``metrics.port`` of the config.
    """
    cfg = load_config(config_path).with_metrics_port(metrics_port)
    check_ports_free(cfg)
    cfg.redis.bus_urls("the sink worker")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    registry = CollectorRegistry()
    # The cameras added in the console join the metrics; a fail-fast client: a scrape must not hang on Redis.
    layout = BusLayout.from_config(cfg.redis)
    store = StreamStore(*layout.connect_first(min(1.0, cfg.redis.socket_timeout_s), fail_fast=True),
                        where=layout.shards[0].where)
    cameras = camera_ids(list(cfg.streams), store)
    collector = PipelineCollector(layout, cameras, cfg.redis.socket_timeout_s)
    registry.register(collector)
    metrics = SinkMetrics(cameras, registry)
    server = None
    if cfg.metrics.enabled:
        try:
            server, _ = start_http_server(cfg.metrics.port, cfg.metrics.host, registry)
        except OSError as exc:
            raise VigilError(f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: {exc}") from exc
        print(f"vigil sink: metrics on {cfg.metrics.host}:{server.server_port}", flush=True)
    try:
        with SinkService(cfg, consumer=consumer, observer=metrics):
            stop.wait()
    finally:
        if server is not None:
            server.shutdown()
        collector.close()
        store.client.close()
