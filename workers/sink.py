"""`vigil sink`: the sink service as a process, until SIGTERM.

HTTP on ``metrics.host:metrics.port`` (:mod:`pipeline.ops.sink_http`, served like the console's and ingest's):
``/metrics`` (the sinks, and the pipeline accounting read from Redis), ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry

from pipeline.core.bus_layout import BusLayout
from pipeline.core.camera_store import StreamStore, camera_ids
from pipeline.core.config import MetricsConfig, VigilConfig, load_config
from pipeline.core.errors import VigilError
from pipeline.ops.metrics import SinkMetrics
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.ops.ports import check_ports_free
from pipeline.ops.sink_http import build_sink_app
from pipeline.ops.sink_service import SinkService
from pipeline.results.classifier_states import StateSource
from pipeline.web.server import ThreadedServer


def bind_http(m: MetricsConfig) -> ThreadedServer | None:
    """The HTTP server's socket, bound before anything starts (None when ``metrics.enabled`` is off)."""
    if not m.enabled:
        return None
    http = ThreadedServer("sink", m.host, m.port)
    try:
        http.bind()
    except OSError as exc:
        raise VigilError(f"cannot serve metrics on {m.host}:{m.port}: {exc}") from exc
    return http


def run(config_path: str, consumer: str | None = None, metrics_port: int | None = None) -> None:
    """Run every sink, plus HTTP (/metrics, /healthz, /readyz), until SIGTERM/SIGINT.

    ``metrics_port`` (``--metrics-port``) replaces ``metrics.port`` of the config.
    """
    cfg = load_config(config_path).with_metrics_port(metrics_port)
    check_ports_free(cfg)
    cfg.redis.bus_urls("the sink worker")
    http = bind_http(cfg.metrics)
    try:
        _serve(cfg, consumer, http)
    finally:
        if http is not None:
            http.stop()


def _serve(cfg: VigilConfig, consumer: str | None, http: ThreadedServer | None) -> None:
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
    collector = PipelineCollector(layout, cameras, cfg.redis.socket_timeout_s, states=StateSource.from_config(cfg))
    registry.register(collector)
    try:
        with SinkService(cfg, consumer=consumer, observer=SinkMetrics(cameras, registry)) as service:
            if http is not None:
                http.start(build_sink_app(registry, service.status))
                print(f"vigil sink: metrics on {cfg.metrics.host}:{http.port}", flush=True)
            stop.wait()
    finally:
        collector.close()
        store.client.close()
