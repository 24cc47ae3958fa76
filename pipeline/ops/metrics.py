"""Every Prometheus metric Vigil exports, in one place: the ingest and sink workers' own metrics here, and
the pipeline's figures that every process reads from Redis at scrape in :mod:`pipeline.ops.pipeline_metrics`
(:class:`PipelineCollector`).

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
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import Enum as StateMetric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pipeline.ingest.camera import CameraState
from pipeline.ingest.health import CONDITIONS, FrameStats
from pipeline.ops.pipeline_metrics import Cameras, camera_source

__all__ = ["CAMERA_STATES", "CONTENT_TYPE_LATEST", "DROP_REASONS", "IngestMetrics", "SinkMetrics", "render"]

CAMERA_STATES = tuple(state.value for state in CameraState)

#: Why a sampled frame did not reach Redis (or left it unread).
DROP_REASONS = (
    "bus_down",  # the camera's Redis instance is down: unreachable (refused, lost, timed out), or in backoff
    "bus_error",  # the XADD failed otherwise (Redis answered it with an error)
    "bus_full",  # the camera's Redis instance is at its maxmemory and refused the frame (it is up)
    "evicted",  # removed unread when the camera's stream was longer than redis.maxlen (drop-oldest)
    "frozen",  # not published: the camera is frozen and its health.skip_frozen is set
    "no_zones",  # not published: full_frame is off and every zone is too small on the camera's resolution
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
        for stream_id in removed:
            self._remove_stream(stream_id)

    def _remove_stream(self, stream_id: str) -> None:
        for metric in (self._decoded, self._sampled, self._published, self._reconnects, self._state,
                       self._age, self._decode_latency, self._publish_latency, self._configured_fps,
                       self._effective_fps, self._brightness, self._contrast, self._sharpness, self._change,
                       self._view):
            try:
                metric.remove(stream_id)
            except KeyError:
                continue  # that series was never created (e.g. no frame was ever decoded)
        for metric, values in ((self._dropped, DROP_REASONS), (self._health, CONDITIONS)):
            for value in values:
                try:
                    metric.remove(stream_id, value)
                except KeyError:
                    continue

    def _known(self, stream_id: str) -> bool:
        return stream_id in self._streams

    # -- events ------------------------------------------------------------------------------------

    def frame_decoded(self, stream_id: str, latency_seconds: float) -> None:
        if self._known(stream_id):
            self._decoded.labels(stream_id).inc()
            self._decode_latency.labels(stream_id).observe(latency_seconds)

    def set_health(self, stream_id: str, stats: FrameStats, active: Iterable[str]) -> None:
        """The camera's health conditions (0/1 each) and the statistics of its last sampled frame."""
        if not self._known(stream_id):
            return
        on = set(active)
        for condition in CONDITIONS:
            self._health.labels(stream_id, condition).set(1 if condition in on else 0)
        self._brightness.labels(stream_id).set(stats.luma_mean / 255)
        self._contrast.labels(stream_id).set(stats.luma_spread / 255)
        self._sharpness.labels(stream_id).set(stats.sharpness)
        self._change.labels(stream_id).set(min(stats.change, 255.0) / 255)
        self._view.labels(stream_id).set(stats.view_correlation)

    def frame_sampled(self, stream_id: str) -> None:
        if self._known(stream_id):
            self._sampled.labels(stream_id).inc()

    def frame_published(self, stream_id: str, latency_seconds: float) -> None:
        if self._known(stream_id):
            self._published.labels(stream_id).inc()
            self._publish_latency.labels(stream_id).observe(latency_seconds)

    def frames_dropped(self, stream_id: str, reason: str, count: int = 1) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; use one of {DROP_REASONS}")
        if self._known(stream_id) and count > 0:
            self._dropped.labels(stream_id, reason).inc(count)

    def reconnected(self, stream_id: str) -> None:
        if self._known(stream_id):
            self._reconnects.labels(stream_id).inc()

    def set_state(self, stream_id: str, state: str) -> None:
        if self._known(stream_id):
            self._state.labels(stream_id).state(state)

    def track_frame_age(self, stream_id: str, age_seconds: Callable[[], float]) -> None:
        """Compute the stream's last-frame age at scrape time, from the camera's own clock."""
        if self._known(stream_id):
            self._age.labels(stream_id).set_function(age_seconds)

    def set_sampling_rate(self, stream_id: str, configured_fps: float, effective_fps: float) -> None:
        if self._known(stream_id):
            self._configured_fps.labels(stream_id).set(configured_fps)
            self._effective_fps.labels(stream_id).set(effective_fps)

    def set_bus_up(self, index: int, up: bool) -> None:
        self._bus_up.labels(str(index)).set(1.0 if up else 0.0)


# --------------------------------------------------------------------------------------------------
# Inference and sinks
# --------------------------------------------------------------------------------------------------

FRAME_AGE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CAMERAS_REFRESH_S = 5.0  # how often the sink metrics ask which cameras there are (cameras added at runtime)

class SinkMetrics:
    """The sink worker's metrics: results written per sink, failures, records refused for good (dead-lettered),
    frame age at the sink."""

    def __init__(self, stream_ids: Cameras, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._cameras = camera_source(stream_ids)
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
        self._recent: dict[str, deque[float]] = {stream_id: deque(maxlen=500) for stream_id in self._streams}
        self._recent_lock = threading.Lock()

    def recent_ages(self, stream_id: str) -> list[float]:
        with self._recent_lock:
            return list(self._recent.get(stream_id, ()))

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
        for stream_id in streams:
            self._rejected.labels(sink, stream_id if stream_id in self._streams else "other").inc()
