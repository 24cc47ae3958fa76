"""`vigil ingest`: the ingest service as a process (:class:`pipeline.ops.ingest_service.IngestService`).

* ``--shard i/n`` (or ``auto/n``) picks the cameras this worker owns (:mod:`pipeline.ingest.shard`);
* SIGHUP reloads the config's camera list; SIGTERM/SIGINT stop every camera and exit 0;
* HTTP ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.host:metrics.port``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.ingest.frame_path import DEFAULT_FRAME_SIZE
from pipeline.ops.ingest_service import IngestService
from pipeline.ops.ports import check_ports_free

log = logging.getLogger("vigil.ingest")


def run(config_path: Path, shard: tuple[int, int] = (0, 1),
        frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE, metrics_port: int | None = None) -> None:
    """Run the worker until SIGTERM/SIGINT; reload the config on SIGHUP. Call from the main thread.

    ``metrics_port`` (``--metrics-port``) replaces ``metrics.port`` of the config, reloaded ones included.
    """
    cfg = load_config(config_path).with_metrics_port(metrics_port)
    check_ports_free(cfg)
    stop, hup = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        (hup if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with IngestService(cfg, shard, frame_size) as worker:
        print(f"vigil ingest: http on port {worker.http_port}", flush=True)
        while not stop.is_set():
            if hup.wait(0.2):
                hup.clear()
                try:
                    worker.reload(load_config(config_path).with_metrics_port(metrics_port))
                except ConfigError as exc:
                    log.error("config reload failed, keeping the running config: %s", exc)
        log.info("shutting down: stopping %d camera(s)", len(worker.cameras))
    log.info("ingest worker stopped")
