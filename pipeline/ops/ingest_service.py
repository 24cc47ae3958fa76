"""The ingest worker as a service: wiring, HTTP and lifecycle around :class:`~pipeline.ingest.worker.IngestWorker`.

Which cameras run and what happens to each frame is :mod:`pipeline.ingest` (``worker.py``: the camera
set; ``frame_path.py``: sample -> resize -> health -> publish). This shell connects the frame bus
(:class:`~pipeline.bus.publisher.FrameBus`) and the console's camera store (the runtime changes), exports
the metrics (:class:`~pipeline.ops.metrics.IngestMetrics`) and serves HTTP on ``metrics.host:metrics.port``
(port 0 picks a free one; :mod:`pipeline.ops.ingest_http`: ``/metrics``, ``/healthz``, ``/readyz``,
``POST /cameras/<id>/accept-view``). When Redis is down the cameras keep reading, frames are counted as
dropped, and the bus retries with backoff. ``vigil ingest`` runs it as a process (:mod:`workers.ingest`);
``vigil run`` in-process.
"""

from __future__ import annotations

import logging
from types import TracebackType

from prometheus_client import CollectorRegistry

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.core.camera_store import StreamStore
from pipeline.core.config import VigilConfig
from pipeline.core.errors import VigilError
from pipeline.ingest.frame_path import DEFAULT_FRAME_SIZE
from pipeline.ingest.worker import IngestWorker
from pipeline.ops.ingest_http import build_ingest_app
from pipeline.ops.metrics import IngestMetrics
from pipeline.web.server import ThreadedServer

log = logging.getLogger("vigil.ingest")


class IngestService(IngestWorker):
    """``with IngestService(cfg) as worker: ...`` runs every owned camera until the block exits."""

    def __init__(self, cfg: VigilConfig, shard: tuple[int, int] = (0, 1),
                 frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                 registry: CollectorRegistry | None = None) -> None:
        cfg.redis.bus_urls("the ingest worker")
        self.metrics = IngestMetrics(registry)
        super().__init__(cfg, FrameBus(BusOptions.from_config(cfg), self.metrics.set_bus_up), self.metrics,
                         shard, frame_size)
        self._http: ThreadedServer | None = None

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    @property
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    def __enter__(self) -> IngestService:
        self._bus.__enter__()
        try:
            # Short timeouts: the feedback loop asks for the store's version every second and must not hang
            # on a frozen Redis (the frames go through the bus, with its own backoff).
            layout = self._bus.opts.layout
            self.store = StreamStore(*layout.connect_first(min(1.0, self.cfg.redis.socket_timeout_s), fail_fast=True),
                                     where=layout.shards[0].where)
            self.read_store()
            for warning in self._bus.capacity_warnings({s.id: self.frames.frame_bytes(s) for s in self.owned()}):
                log.warning("%s", warning)
            if self.cfg.metrics.enabled:
                self._start_http()
            self.start_cameras()
        except BaseException:
            self.close()
            raise
        log.info("ingest worker: shard %d/%d owns %d of %d camera(s)%s", *self.shard, len(self.cameras),
                 len(self.cfg.streams), f", http on port {self.http_port}" if self._http else "")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.stop_cameras()
        if self._http is not None:
            self._http.stop()
            self._http = None
        self._bus.__exit__(None, None, None)
        if self.store is not None:
            self.store.client.close()
            self.store = None

    def _start_http(self) -> None:
        m = self.cfg.metrics
        self._http = ThreadedServer("ingest", m.host, m.port)
        try:
            self._http.bind()
        except OSError as exc:
            self._http = None
            raise VigilError(f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror or exc}; "
                             "set metrics.port (0 picks a free port)") from exc
        self._http.start(build_ingest_app(self))
