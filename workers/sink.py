"""The sink worker: result records from Redis -> every configured sink, each at its own pace.

Each sink has its own consumer group (``vigil-sink-<name>``) on the results stream of every bus
instance, so a slow or failing sink never stalls inference or the other sinks: its backlog waits in
Redis (bounded by the results stream's MAXLEN). Records are acknowledged only after the sink's
``write`` returned; a failing write is retried with backoff, and after a restart the worker first
re-reads what it had taken but not acknowledged. Delivery is therefore at-least-once.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from pipeline.core.config import VigilConfig, sink_name
from pipeline.core.errors import BusError, SinkError, VigilError
from pipeline.core.keys import RESULTS_KEY, sink_group
from pipeline.core.redact import redact_url
from pipeline.results.record import ResultFormatError, ResultRecord
from pipeline.results.sinks import Sink, build_sink

log = logging.getLogger(__name__)


class SinkMetricsLike(Protocol):
    def written(self, sink: str, records: list[ResultRecord], now_s: float) -> None: ...

    def failed(self, sink: str) -> None: ...


@dataclass
class _Pending:
    instance: int
    ids: list[bytes]
    records: list[ResultRecord]


class SinkRunner:
    """Feeds one sink from the results streams of all instances, in its own thread."""

    def __init__(self, name: str, sink: Sink, clients: list[Any], *, batch_size: int, consumer: str,
                 metrics: SinkMetricsLike | None = None, backoff_cap_s: float = 30.0) -> None:
        # clients typed Any: redis-py's reply types are a union over decode_responses; ours are bytes.
        self.name, self.sink, self.clients, self.batch_size = name, sink, clients, batch_size
        self.group, self.consumer, self.metrics = sink_group(name), consumer, metrics
        self.backoff_cap_s = backoff_cap_s
        self.delivered = 0
        self._own_pending_done = [False] * len(clients)
        self._thread: threading.Thread | None = None

    def _ensure_group(self, idx: int) -> None:
        try:
            # "0": a new sink starts from the oldest result still kept, not only new ones.
            self.clients[idx].xgroup_create(RESULTS_KEY, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, idx: int, block_ms: int | None) -> _Pending | None:
        client = self.clients[idx]
        # First our own unacknowledged entries (from before a restart), then new ones.
        start = "0" if not self._own_pending_done[idx] else ">"
        try:
            reply = client.xreadgroup(self.group, self.consumer, {RESULTS_KEY: start}, count=self.batch_size,
                                      block=None if start == "0" else block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group(idx)
            return None
        entries = reply[0][1] if reply else []
        if start == "0" and not entries:
            self._own_pending_done[idx] = True
            return None
        ids, records = [], []
        for eid, fields in entries:
            ids.append(eid)
            try:
                records.append(ResultRecord.from_fields(fields))
            except ResultFormatError as exc:
                log.error("sink %s: skipping malformed result %s: %s", self.name, eid.decode(), exc)
        return _Pending(idx, ids, records) if ids else None

    def _deliver(self, batch: _Pending, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                if batch.records:
                    self.sink.write(batch.records)
                self.clients[batch.instance].xack(RESULTS_KEY, self.group, *batch.ids)
                self.delivered += len(batch.records)
                if self.metrics is not None:
                    self.metrics.written(self.name, batch.records, time.time())
                return
            except (SinkError, redis.RedisError) as exc:
                delay = min(self.backoff_cap_s, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0)  # noqa: S311
                attempt += 1
                if self.metrics is not None:
                    self.metrics.failed(self.name)
                log.warning("sink %s: %s; retrying the same %d record(s) in %.1fs", self.name, exc,
                            len(batch.records), delay)
                stop.wait(delay)

    def run(self, stop: threading.Event) -> None:
        for idx in range(len(self.clients)):
            self._ensure_group(idx)
        block_ms = 200 if len(self.clients) == 1 else 20
        while not stop.is_set():
            got_any = False
            for idx in range(len(self.clients)):
                try:
                    batch = self._read(idx, block_ms)
                except redis.RedisError as exc:
                    log.warning("sink %s: redis instance %d: %s", self.name, idx, exc)
                    stop.wait(1.0)
                    continue
                if batch is not None:
                    got_any = True
                    self._deliver(batch, stop)
            if not got_any and len(self.clients) > 1:
                stop.wait(0.01)

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self.run, args=(stop,), name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class SinkWorker:
    """All sinks of a config, each in its own thread. Use as a context manager."""

    def __init__(self, cfg: VigilConfig, redis_urls: list[str] | None = None, consumer: str | None = None,
                 metrics: SinkMetricsLike | None = None) -> None:
        self.cfg = cfg
        self.urls = redis_urls or cfg.redis.urls
        if not self.urls:
            raise BusError("redis.urls is empty: name the Redis instance(s) of the bus (vigil run starts one)")
        self.consumer = consumer or socket.gethostname()
        self.metrics = metrics
        self.stop = threading.Event()
        self.runners: list[SinkRunner] = []
        self._clients: list[Any] = []
        self._sinks: list[Sink] = []

    def __enter__(self) -> SinkWorker:
        self._clients = [redis.Redis.from_url(u, socket_timeout=10) for u in self.urls]
        try:
            for i, sink_cfg in enumerate(self.cfg.sinks):
                sink = build_sink(sink_cfg, self.urls[0]).__enter__()
                self._sinks.append(sink)
                self.runners.append(SinkRunner(sink_name(sink_cfg, i), sink, self._clients,
                                               batch_size=sink_cfg.batch_size, consumer=self.consumer,
                                               metrics=self.metrics))
            for r in self.runners:
                r.start(self.stop)
        except (VigilError, redis.RedisError) as exc:
            self.__exit__(None, None, None)
            if isinstance(exc, VigilError):
                raise
            raise BusError(f"sink worker cannot reach {', '.join(map(redact_url, self.urls))}: {exc}") from exc
        log.info("sink worker: %d sink(s): %s", len(self.runners), ", ".join(r.name for r in self.runners))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for r in self.runners:
            r.join(10)
        for s in self._sinks:
            s.__exit__(None, None, None)
        for c in self._clients:
            c.close()
        self._sinks, self._clients = [], []


def run(config_path: str, consumer: str | None = None) -> None:
    """The `vigil sink` process: all sinks, plus /metrics (sinks and pipeline accounting), until SIGTERM."""
    import signal
    from types import FrameType

    from prometheus_client import CollectorRegistry, start_http_server

    from pipeline.core.config import load_config
    from pipeline.ops.metrics import PipelineCollector, SinkMetrics

    cfg = load_config(config_path)
    if not cfg.redis.urls:
        raise BusError("redis.urls is empty: the sink worker needs the Redis instance(s) of the frame bus")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    registry = CollectorRegistry()
    collector = PipelineCollector(cfg.redis.urls, [s.id for s in cfg.streams])
    registry.register(collector)
    metrics = SinkMetrics([s.id for s in cfg.streams], registry)
    server = None
    if cfg.metrics.enabled:
        try:
            server, _ = start_http_server(cfg.metrics.port, cfg.metrics.host, registry)
        except OSError as exc:
            raise VigilError(f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: {exc}") from exc
    try:
        with SinkWorker(cfg, consumer=consumer, metrics=metrics):
            stop.wait()
    finally:
        if server is not None:
            server.shutdown()
        collector.close()
