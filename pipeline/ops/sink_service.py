"""The sink service: every configured sink fed from the results streams, each in its own thread.

``vigil sink`` runs it as a process (:mod:`workers.sink`, its ``/readyz`` is :meth:`SinkService.status`);
``vigil run`` in-process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.clock import iso_utc
from pipeline.core.config import VigilConfig, sink_name
from pipeline.core.errors import BusError, VigilError
from pipeline.core.lifecycle import Lifecycle, not_new
from pipeline.core.redis_errors import redis_errors
from pipeline.results.dead_letter import merge_rejections, read_rejections
from pipeline.results.delivery import SinkObserver, SinkRunner
from pipeline.results.sinks import Sink, SinkContext, build_sink
from pipeline.results.state_store import RedisStateStore

log = logging.getLogger(__name__)


class SinkService:
    """All sinks of a config, each in its own thread: ``with SinkService(cfg, consumer="pod-1"): ...``."""

    def __init__(self, cfg: VigilConfig, consumer: str | None = None, observer: SinkObserver | None = None) -> None:
        self.cfg = cfg
        self.urls = cfg.redis.bus_urls("the sink service")
        self.consumer = consumer or socket.gethostname()
        self.observer = observer
        self.stop = threading.Event()
        self.runners: list[SinkRunner] = []
        self._clients: BusClients | None = None
        self._sinks: list[Sink] = []
        self._state = Lifecycle.NEW

    def __enter__(self) -> SinkService:
        if self._state is not Lifecycle.NEW:
            raise VigilError(not_new("sink service", self._state, "make a new SinkService to run the sinks again"))
        self._state = Lifecycle.OPEN
        try:
            layout = BusLayout.from_config(self.cfg.redis)
            self._clients = clients = layout.connect(self.cfg.redis.socket_timeout_s, block_s=1.0)
            layout.check_servers(self.cfg.redis.socket_timeout_s, must_answer=False, clients=clients)
            streams = tuple(s.id for s in self.cfg.streams)
            default_redis = None if layout.is_cluster else self.urls[0]  # a redis sink on a cluster names its own
            zones = {s.id: s.zone_ids for s in self.cfg.streams}
            for i, sink_cfg in enumerate(self.cfg.sinks):
                name = sink_name(sink_cfg, i)
                store = RedisStateStore(clients.client(0), clients.keys(0).classifier_states(name), clients.where(0))
                ctx = SinkContext(name, default_redis, streams, zones, tuple(self.cfg.classifiers), store)
                sink = build_sink(sink_cfg, ctx).__enter__()
                self._sinks.append(sink)
                self.runners.append(SinkRunner(name, sink, sink_cfg, clients, consumer=self.consumer,
                                               observer=self.observer,
                                               deadletter_maxlen=self.cfg.redis.deadletter_maxlen))
        except VigilError:
            self.__exit__(None, None, None)
            raise
        for r in self.runners:
            r.start(self.stop)
        log.info("sink worker: %d sink(s): %s", len(self.runners), ", ".join(r.name for r in self.runners))
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop.set()
        for r in self.runners:
            r.join(10)
        for s in self._sinks:
            s.__exit__(None, None, None)
        if self._clients is not None:
            self._clients.close()
        self._sinks, self._clients, self.runners = [], None, []
        self._state = Lifecycle.CLOSED

    def status(self) -> dict[str, Any]:
        """The ``/readyz`` document of ``vigil sink``: ready while the service is open, every sink's runner runs
        and every bus shard answers; ``not_ready`` says what is missing. Per sink, as the console's
        ``/api/v1/sinks`` shows it: the records its output refused for good over every shard (a shard that does
        not answer is left out) and the last refusal; and for the sinks this process runs, whether the runner
        runs and the records it delivered and had refused here. Every URL is redacted."""
        runners, clients = list(self.runners), self._clients
        missing = [] if self._state is Lifecycle.OPEN else [f"the sink service is {self._state.value}"]
        missing += [f"sink {r.name} is not running" for r in runners if not r.running]
        per_shard: list[dict[str, dict[str, Any]]] = []
        if clients is not None:
            for idx, client, keys in clients:
                try:
                    with redis_errors("reading the sinks' rejections (HGETALL)", clients.where(idx)):
                        per_shard.append(read_rejections(client, keys))
                except BusError as exc:
                    missing.append(str(exc))
        live = {r.name: {"running": r.running, "delivered": r.delivered, "rejected": r.rejected} for r in runners}
        names = [sink_name(s, i) for i, s in enumerate(self.cfg.sinks)]
        sinks = [{**doc, **live.get(doc["name"], {})} for doc in merge_rejections(names, per_shard)]
        return {"ready": not missing, "not_ready": missing, "checked_at": iso_utc(time.time()),
                "consumer": self.consumer, "sinks": sinks}
