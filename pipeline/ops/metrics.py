"""Every Prometheus metric Vigil exports, in one place.

Conventions:

* names start with ``vigil_<process>_`` and end in their unit (``_seconds``, ``_frames_total``);
* the ``stream`` label only ever takes the ids of the cameras this process was configured with:
  :meth:`IngestMetrics.set_streams` bounds it, drops the series of removed cameras, and silently
  ignores late events from a camera that is being stopped (so its series does not reappear);
* each process (and each test) builds its own :class:`~prometheus_client.CollectorRegistry`, never the
  global default one, so several workers can live in one interpreter;
* label values never contain URLs: a Redis instance is labelled by its index in ``redis.urls``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import Enum as StateMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from pipeline.bus.publisher import trimmed_unread_entries
from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.keys import INFERENCE_GROUP, REPLICA_KEY_PREFIX, SINK_GROUP_PREFIX
from pipeline.inference.replica_stats import BATCH_SIZE_BUCKETS, INFERENCE_BUCKETS_S, cumulative_buckets
from pipeline.ingest.camera import CameraState
from pipeline.ingest.health import CONDITIONS, FrameStats

__all__ = ["CAMERA_STATES", "CONTENT_TYPE_LATEST", "DROP_REASONS", "IngestMetrics", "PipelineCollector",
           "SinkMetrics", "render"]

CAMERA_STATES = tuple(state.value for state in CameraState)

#: Why a sampled frame did not reach Redis (or left it unread).
DROP_REASONS = (
    "bus_down",  # the camera's Redis instance is down and in backoff: not even tried
    "bus_error",  # the XADD failed (connection lost, timeout, Redis error)
    "bus_full",  # the camera's Redis instance is at its maxmemory and refused the frame (it is up)
    "evicted",  # trimmed by XADD MAXLEN ~ before any consumer group read it (drop-oldest)
    "frozen",  # not published: the camera is frozen and its health.skip_frozen is set
)

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (what ``/metrics`` serves)."""
    return generate_latest(registry)


class IngestMetrics:
    """The ingest worker's metrics. Methods are thread-safe (prometheus_client locks each series)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._streams: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        r = self.registry
        self._decoded = Counter("vigil_ingest_decoded_frames", "Frames decoded from the camera.",
                                ["stream"], registry=r)
        self._sampled = Counter("vigil_ingest_sampled_frames", "Frames picked by the sampler at the "
                                "stream's target fps.", ["stream"], registry=r)
        self._published = Counter("vigil_ingest_published_frames", "Frames written to the frame bus.",
                                  ["stream"], registry=r)
        self._dropped = Counter("vigil_ingest_dropped_frames", "Sampled frames lost, by reason: "
                                + ", ".join(DROP_REASONS) + ".", ["stream", "reason"], registry=r)
        self._reconnects = Counter("vigil_ingest_reconnects", "Times the camera was reopened after "
                                   "losing its stream or failing to open.", ["stream"], registry=r)
        self._state = StateMetric("vigil_ingest_camera_state", "Current state of the camera.",
                                  ["stream"], states=list(CAMERA_STATES), registry=r)
        self._age = Gauge("vigil_ingest_last_frame_age_seconds", "Seconds since the camera last "
                          "delivered a decoded frame (since start if never).", ["stream"], registry=r)
        self._decode_latency = Histogram("vigil_ingest_decode_latency_seconds", "Time to read and "
                                         "decode one frame.", ["stream"], buckets=_LATENCY_BUCKETS_S,
                                         registry=r)
        self._publish_latency = Histogram("vigil_ingest_publish_latency_seconds", "Time to resize, "
                                          "encode and XADD one sampled frame.", ["stream"],
                                          buckets=_LATENCY_BUCKETS_S, registry=r)
        self._configured_fps = Gauge("vigil_ingest_configured_frames_per_second", "The stream's fps: the most "
                                     "it samples.", ["stream"], registry=r)
        self._effective_fps = Gauge("vigil_ingest_effective_frames_per_second", "The rate the camera samples at "
                                    "now: lower than configured while inference cannot take its frames.",
                                    ["stream"], registry=r)
        self._health = Gauge("vigil_camera_health", "1 while the condition holds for the camera, else 0 "
                             f"({', '.join(CONDITIONS)}).", ["stream", "condition"], registry=r)
        self._brightness = Gauge("vigil_camera_brightness_ratio", "Mean grey level of the last sampled frame, "
                                 "0 (black) to 1 (white).", ["stream"], registry=r)
        self._contrast = Gauge("vigil_camera_contrast_ratio", "Standard deviation of its grey levels, / 255 "
                               "(near 0: uniform).", ["stream"], registry=r)
        self._sharpness = Gauge("vigil_camera_sharpness_variance", "Variance of the Laplacian of its grey "
                                "picture at model size (low: blurred).", ["stream"], registry=r)
        self._change = Gauge("vigil_camera_change_ratio", "Mean absolute change from the previous sampled frame, "
                             "/ 255 (near 0: frozen).", ["stream"], registry=r)
        self._view = Gauge("vigil_camera_view_correlation_ratio", "Correlation of the averaged view with the "
                           "reference view (low: moved; NaN before a reference).", ["stream"], registry=r)
        self._bus_up = Gauge("vigil_ingest_bus_up", "1 if the Redis instance (index in redis.urls) "
                             "answered the last command, else 0.", ["bus"], registry=r)

    # -- label bounds ------------------------------------------------------------------------------

    def set_streams(self, stream_ids: Iterable[str]) -> None:
        """Allow exactly these stream labels; remove every series of cameras no longer configured."""
        new = frozenset(stream_ids)
        with self._lock:
            removed = self._streams - new
            self._streams = new
        for sid in removed:
            self._remove_stream(sid)

    def _remove_stream(self, sid: str) -> None:
        for metric in (self._decoded, self._sampled, self._published, self._reconnects, self._state,
                       self._age, self._decode_latency, self._publish_latency, self._configured_fps,
                       self._effective_fps, self._brightness, self._contrast, self._sharpness, self._change,
                       self._view):
            try:
                metric.remove(sid)
            except KeyError:
                continue  # that series was never created (e.g. no frame was ever decoded)
        for metric, values in ((self._dropped, DROP_REASONS), (self._health, CONDITIONS)):
            for value in values:
                try:
                    metric.remove(sid, value)
                except KeyError:
                    continue

    def _known(self, sid: str) -> bool:
        return sid in self._streams

    # -- events ------------------------------------------------------------------------------------

    def frame_decoded(self, sid: str, latency_seconds: float) -> None:
        if self._known(sid):
            self._decoded.labels(sid).inc()
            self._decode_latency.labels(sid).observe(latency_seconds)

    def set_health(self, sid: str, stats: FrameStats, active: Iterable[str]) -> None:
        """The camera's health conditions (0/1 each) and the statistics of its last sampled frame."""
        if not self._known(sid):
            return
        on = set(active)
        for condition in CONDITIONS:
            self._health.labels(sid, condition).set(1 if condition in on else 0)
        self._brightness.labels(sid).set(stats.luma_mean / 255)
        self._contrast.labels(sid).set(stats.luma_spread / 255)
        self._sharpness.labels(sid).set(stats.sharpness)
        self._change.labels(sid).set(min(stats.change, 255.0) / 255)
        self._view.labels(sid).set(stats.view_correlation)

    def frame_sampled(self, sid: str) -> None:
        if self._known(sid):
            self._sampled.labels(sid).inc()

    def frame_published(self, sid: str, latency_seconds: float) -> None:
        if self._known(sid):
            self._published.labels(sid).inc()
            self._publish_latency.labels(sid).observe(latency_seconds)

    def frames_dropped(self, sid: str, reason: str, count: int = 1) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; use one of {DROP_REASONS}")
        if self._known(sid) and count > 0:
            self._dropped.labels(sid, reason).inc(count)

    def reconnected(self, sid: str) -> None:
        if self._known(sid):
            self._reconnects.labels(sid).inc()

    def set_state(self, sid: str, state: str) -> None:
        if self._known(sid):
            self._state.labels(sid).state(state)

    def track_frame_age(self, sid: str, age_seconds: Callable[[], float]) -> None:
        """Compute the stream's last-frame age at scrape time, from the camera's own clock."""
        if self._known(sid):
            self._age.labels(sid).set_function(age_seconds)

    def set_sampling_rate(self, sid: str, configured_fps: float, effective_fps: float) -> None:
        if self._known(sid):
            self._configured_fps.labels(sid).set(configured_fps)
            self._effective_fps.labels(sid).set(effective_fps)

    def set_bus_up(self, index: int, up: bool) -> None:
        self._bus_up.labels(str(index)).set(1.0 if up else 0.0)


# --------------------------------------------------------------------------------------------------
# Inference and sinks
# --------------------------------------------------------------------------------------------------

FRAME_AGE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CAMERAS_REFRESH_S = 5.0  # how often the sink metrics ask which cameras there are (cameras added at runtime)

#: The configured cameras, now: a list, or a function that says it (the YAML's with the console's runtime
#: changes, :func:`pipeline.core.camera_store.camera_ids`). Labels stay bounded: only these cameras appear.
Cameras = Iterable[str] | Callable[[], Iterable[str]]


def _camera_source(cameras: Cameras) -> Callable[[], list[str]]:
    if callable(cameras):
        return lambda: list(cameras())
    fixed = list(cameras)
    return lambda: fixed


class SinkMetrics:
    """The sink worker's metrics: results written per sink, failures, records refused for good (dead-lettered),
    frame age at the sink."""

    def __init__(self, stream_ids: Cameras, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._cameras = _camera_source(stream_ids)
        self._streams = set(self._cameras())
        self._cameras_at = time.monotonic()
        self._written = Counter("vigil_sink_written_results", "Result records a sink took.", ["sink"],
                                registry=self.registry)
        self._failures = Counter("vigil_sink_failed_writes", "Sink writes that failed (retried).", ["sink"],
                                 registry=self.registry)
        self._rejected = Counter("vigil_sink_rejected_records", "Records a sink's output refused for good, set "
                                 "aside in the results dead-letter.", ["sink", "stream"], registry=self.registry)
        self._age = Histogram("vigil_sink_frame_age_seconds", "Capture to result written by the sink.",
                              ["stream", "sink"], buckets=FRAME_AGE_BUCKETS_S, registry=self.registry)
        # The last ages per camera, for exact percentiles in `vigil run`'s table and `vigil bench`.
        self._recent: dict[str, deque[float]] = {sid: deque(maxlen=500) for sid in self._streams}
        self._recent_lock = threading.Lock()

    def recent_ages(self, stream: str) -> list[float]:
        with self._recent_lock:
            return list(self._recent.get(stream, ()))

    def _refresh_cameras(self) -> None:
        if time.monotonic() - self._cameras_at > CAMERAS_REFRESH_S:
            self._cameras_at = time.monotonic()
            self._streams = set(self._cameras())

    def written(self, sink: str, records: list[Any], now_s: float) -> None:
        self._written.labels(sink).inc(len(records))
        self._refresh_cameras()
        for r in records:
            if r.stream in self._streams:  # bounded: configured cameras only
                age = max(0.0, now_s - r.capture_ts)
                self._age.labels(r.stream, sink).observe(age)
                with self._recent_lock:
                    self._recent.setdefault(r.stream, deque(maxlen=500)).append(age)

    def failed(self, sink: str) -> None:
        self._failures.labels(sink).inc()

    def rejected(self, sink: str, streams: list[str]) -> None:
        """Records refused for good, one camera id each: counted per camera (``other`` for an unknown one)."""
        self._refresh_cameras()
        for stream in streams:
            self._rejected.labels(sink, stream if stream in self._streams else "other").inc()


class PipelineCollector(Collector):
    """Frame accounting and queue depth per camera, and replica statistics, read from Redis at scrape.

    The counters live in Redis (written in the same transactions as the results), so every process
    that scrapes sees the same exact numbers; ``published = inferred + dropped + dead_lettered``
    holds once the queues are empty.

    A scrape never waits on Redis for more than ``scrape_bound_s``: the read runs in a thread of its
    own, and when it has not answered in time (a frozen Redis, exactly when ``bus_up`` and the drop
    counters matter) the scrape serves the last figures read, with ``vigil_pipeline_stats_up`` 0 and
    ``vigil_pipeline_stats_age_seconds`` saying how old they are. The slow read, if it ever answers,
    refreshes them for the next scrape.
    """

    def __init__(self, layout: BusLayout, stream_ids: Cameras, timeout_s: float,
                 scrape_bound_s: float = 0.5) -> None:
        self._clients = layout.connect(timeout_s)
        self._cameras = _camera_source(stream_ids)
        self._bound_s = scrape_bound_s
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="pipeline-stats")
        self._read: Future[list[Metric] | None] | None = None
        self._lock = threading.Lock()
        self._last: list[Metric] = []
        self._last_at: float | None = None  # time.monotonic() of the figures in _last

    @property
    def clients(self) -> BusClients:
        """The Redis clients, one per bus shard (read-only use)."""
        return self._clients

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)
        self._clients.close()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one read in flight at a time: a frozen Redis does not pile up reads
            if self._read is None or self._read.done():
                self._read = self._reader.submit(self._read_redis)
            read = self._read
        try:
            fresh = read.result(timeout=self._bound_s)
        except FutureTimeout:
            fresh = None
        up = GaugeMetricFamily("vigil_pipeline_stats_up", "1 if Redis answered this scrape's read of the "
                               "pipeline figures within the bound, else 0 (the figures are the last read).")
        age = GaugeMetricFamily("vigil_pipeline_stats_age_seconds", "How old the pipeline figures of this "
                                "scrape are (0 when read now; none read yet: absent).")
        up.add_metric([], 1.0 if fresh is not None else 0.0)
        with self._lock:
            if fresh is not None:
                self._last, self._last_at = fresh, time.monotonic()
            families, read_at = self._last, self._last_at
        yield up
        if read_at is not None:
            age.add_metric([], 0.0 if fresh is not None else time.monotonic() - read_at)
            yield age
        yield from families

    def _read_redis(self) -> list[Metric] | None:
        """Every pipeline family, read now; None when Redis failed (the last figures stay)."""
        try:
            return [*self._stream_families(), self._sink_queue(), *self._replica_families()]
        except (redis.RedisError, OSError):
            return None

    def _stream_families(self) -> Iterator[Metric]:

        published = CounterMetricFamily("vigil_pipeline_published_frames", "Frames written to the frame bus, "
                                        "counted by Redis in the same transaction (exact after any outage).",
                                        labels=["stream"])
        inferred = CounterMetricFamily("vigil_pipeline_inferred_frames", "Frames with a result written.",
                                       labels=["stream"])
        dead = CounterMetricFamily("vigil_pipeline_dead_lettered_frames", "Frames moved to vigil:deadletter.",
                                   labels=["stream"])
        dropped = CounterMetricFamily("vigil_pipeline_dropped_frames", "Frames dropped by backpressure: "
                                      "evicted (trimmed unread), trimmed while pending, or stale (older than "
                                      "inference.max_frame_age_ms when a replica would read it).",
                                      labels=["stream", "reason"])
        queue = GaugeMetricFamily("vigil_pipeline_queue_frames", "Frames waiting: backlog (unread) and "
                                  "pending (read, no result yet).", labels=["stream", "state"])
        for sid in sorted(self._cameras()):
            idx = self._clients.layout.shard_of(sid)
            c, keys = self._clients.client(idx), self._clients.keys(idx)
            stats = {k.decode(): int(v) for k, v in c.hgetall(keys.stats(sid)).items()}
            evicted, backlog, pending = self._stream_queue(c, keys.frames(sid), INFERENCE_GROUP)
            published.add_metric([sid], stats.get("published", 0))
            inferred.add_metric([sid], stats.get("inferred", 0))
            dead.add_metric([sid], stats.get("dead_lettered", 0))
            dropped.add_metric([sid, "evicted"], evicted)
            dropped.add_metric([sid, "trimmed_pending"], stats.get("dropped_pending", 0))
            dropped.add_metric([sid, "stale"], stats.get("dropped_stale", 0))
            queue.add_metric([sid, "backlog"], backlog)
            queue.add_metric([sid, "pending"], pending)
        yield from (published, inferred, dead, dropped, queue)

    def _sink_queue(self) -> Metric:
        """Results each sink has not delivered yet, over every instance: while a sink's output (a webhook,
        the MQTT broker) is away its results wait here, bounded by the results stream's maxlen."""
        queue = GaugeMetricFamily("vigil_pipeline_sink_queue_results", "Results a sink has not delivered: "
                                  "backlog (not taken yet) and pending (taken, not acknowledged).",
                                  labels=["sink", "state"])
        totals: dict[str, list[int]] = {}
        for _, c, keys in self._clients:
            try:
                groups = c.xinfo_groups(keys.results)
            except redis.ResponseError:
                continue  # no results stream on this instance yet
            for g in groups:
                name = g["name"].decode()
                if name.startswith(SINK_GROUP_PREFIX):
                    t = totals.setdefault(name[len(SINK_GROUP_PREFIX):], [0, 0])
                    t[0] += int(g.get("lag") or 0)
                    t[1] += int(g.get("pending", 0))
        for sink, (backlog, pending) in sorted(totals.items()):
            queue.add_metric([sink, "backlog"], backlog)
            queue.add_metric([sink, "pending"], pending)
        return queue

    @staticmethod
    def _stream_queue(c: Any, key: str, group: str) -> tuple[int, int, int]:
        """(trimmed unread, backlog, pending) of one camera stream for the inference group."""
        try:
            info = c.xinfo_stream(key)
            groups = [g for g in c.xinfo_groups(key) if g["name"].decode() == group]
        except redis.ResponseError:
            return 0, 0, 0  # stream not created yet
        evicted = trimmed_unread_entries(info, groups)
        if not groups:
            return evicted, int(info.get("length", 0)), 0
        g = groups[0]
        lag = g.get("lag")
        backlog = int(lag) if lag is not None else max(0, int(info.get("entries-added", 0))
                                                       - int(g.get("entries-read") or 0))
        return evicted, backlog, int(g.get("pending", 0))

    def _replica_families(self) -> Iterator[Metric]:
        batches = CounterMetricFamily("vigil_replica_batches", "Batches classified by the replica.",
                                      labels=["replica"])
        frames = CounterMetricFamily("vigil_replica_inferred_frames", "Frames classified by the replica.",
                                     labels=["replica"])
        size = HistogramMetricFamily("vigil_replica_batch_size", "Frames per batch.", labels=["replica"])
        latency = HistogramMetricFamily("vigil_replica_inference_latency_seconds", "Model time per batch.",
                                        labels=["replica"])
        for client in self._clients.distinct():
            for key in client.scan_iter(match=REPLICA_KEY_PREFIX + "*", count=100):
                h = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
                if not h:
                    continue
                name = key.decode()[len(REPLICA_KEY_PREFIX):]
                batches.add_metric([name], h.get("batches", 0))
                frames.add_metric([name], h.get("frames", 0))
                size.add_metric([name], cumulative_buckets(h, "batch", BATCH_SIZE_BUCKETS), h.get("batch_sum", 0))
                latency.add_metric([name], cumulative_buckets(h, "latency", INFERENCE_BUCKETS_S),
                                   h.get("inference_seconds_sum", 0))
        yield from (batches, frames, size, latency)
