"""Where a sampled frame goes: resize -> BGR->RGB -> health -> cut into zones -> publish (and the console's
preview).

:meth:`FramePath.handle` runs in each camera's thread for every frame the camera samples
(:class:`~pipeline.ingest.camera.Camera` calls it at the stream's fps):

1. every ``console.preview_fps`` at most, a small JPEG of the full frame for the console
   (:class:`~pipeline.ingest.preview.PreviewMaker`);
2. the frame is resized to the model's input with the stream's ``resize`` policy and converted to RGB
   (:func:`pipeline.core.preprocess.resize`: one implementation, shared with ``/classify``);
3. the camera's health checks see it (:class:`~pipeline.ingest.health.CameraHealth`); a change of
   condition is announced as a camera event, and a frozen frame is not published with ``skip_frozen``;
4. it is cut into one model-sized crop per zone (``streams[].zones``, :func:`pipeline.core.preprocess.cut_zone`,
   each with its own ``resize``), with the whole picture first as the zone ``full`` (unless
   ``full_frame: false``); a zone smaller than 32x32 pixels on the camera's real resolution is left out and
   said in the log and in ``/readyz`` (``zone_problems``);
5. it is published with :class:`~pipeline.bus.publisher.FrameBus` (one entry, every crop); a frame Redis
   refused is counted as dropped (``bus_down``, ``bus_full``, ``bus_error``), and every few seconds the
   frames evicted unread (``evicted``).

Camera events (state changes, health conditions) go on the results stream, where the sinks hear of
them. What happens is reported to a :class:`FrameObserver` (:class:`pipeline.ops.metrics.IngestMetrics`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, Protocol

from pipeline.bus.publisher import FrameBus
from pipeline.bus.wire import FrameMessage, ZoneCrop
from pipeline.core.config import FULL_ZONE, StreamConfig, VigilConfig
from pipeline.core.errors import BusError, BusFullError, BusUnavailableError
from pipeline.core.frame import Frame
from pipeline.core.keys import preview_key
from pipeline.core.preprocess import bgr_to_rgb, cut_zone, resize
from pipeline.ingest.camera import CameraState
from pipeline.ingest.health import CameraHealth, FrameStats, describe
from pipeline.ingest.preview import PreviewMaker
from pipeline.ingest.source import RawFrame
from pipeline.results.camera_event import CameraEvent, HealthEvent, StateEvent

log = logging.getLogger("vigil.ingest")

DEFAULT_FRAME_SIZE = (224, 224)
EVICTION_CHECK_S = 5.0
_ENTRY_OVERHEAD_BYTES = 256  # a stream entry's id, field names and listpack headers


class FrameObserver(Protocol):
    """What happens to the sampled frames (:class:`pipeline.ops.metrics.IngestMetrics` exports it)."""

    def frame_published(self, stream_id: str, latency_seconds: float) -> None: ...

    def frames_dropped(self, stream_id: str, reason: str, count: int = 1) -> None: ...

    def set_health(self, stream_id: str, stats: FrameStats, active: Iterable[str]) -> None: ...


class FramePath:
    """Sampled camera frames -> model-sized RGB frames on the bus, judged on the way."""

    def __init__(self, cfg: VigilConfig, bus: FrameBus, observer: FrameObserver,
                 frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> None:
        self.cfg = cfg
        self.frame_height, self.frame_width = frame_size
        self.eviction_check_s = EVICTION_CHECK_S
        self._bus = bus
        self._observer = observer
        self._preview = PreviewMaker(cfg.console)
        self._health: dict[str, CameraHealth] = {}  # camera -> its health checks (fed in the camera's thread)
        self._seq: dict[str, int] = {}
        self._evicted: dict[str, tuple[float, int]] = {}  # stream -> (checked at, evicted so far)
        self._zone_problems: dict[str, dict[str, str]] = {}  # camera -> zone -> why it is not classified
        self._resolution_wh: dict[str, tuple[int, int]] = {}  # camera -> its picture's size, as last decoded
        self._lock = threading.Lock()

    def frame_bytes(self, stream: StreamConfig) -> int:
        """About what one published frame of ``stream`` takes in Redis: a crop per zone (raw pixels; JPEG about a
        sixth of them)."""
        pixels = self.frame_height * self.frame_width * 3 * len(stream.zone_ids)
        return (pixels if self.cfg.redis.frame_encoding == "raw" else pixels // 6) + _ENTRY_OVERHEAD_BYTES

    # -- cameras -----------------------------------------------------------------------------------

    def add(self, stream: StreamConfig) -> None:
        """A camera starts: fresh health checks; its frame numbers continue where they were."""
        with self._lock:
            self._seq.setdefault(stream.id, 0)
            self._health[stream.id] = CameraHealth(stream.health)

    def keep_only(self, stream_ids: Iterable[str]) -> None:
        """Forget every camera but these (removed cameras)."""
        keep = set(stream_ids)
        with self._lock:
            for stream_id in [s for s in self._seq if s not in keep]:
                del self._seq[stream_id]
                self._health.pop(stream_id, None)
                self._zone_problems.pop(stream_id, None)
                self._resolution_wh.pop(stream_id, None)

    # -- one frame ---------------------------------------------------------------------------------

    def handle(self, stream: StreamConfig, raw: RawFrame) -> None:
        """Cut, resize, convert, judge and publish one sampled frame (runs in the camera thread)."""
        t0 = time.perf_counter()
        if self._preview.due(stream.id):
            self._store_preview(stream.id, raw)
        whole = bgr_to_rgb(resize(raw.bgr, self.frame_height, self.frame_width, stream.resize))
        if self._judge_health(stream, whole):
            return
        crops = self._crops(stream, raw.bgr, whole)
        if not crops:
            self._observer.frames_dropped(stream.id, "no_zones")
            return
        with self._lock:
            seq = self._seq.get(stream.id, 0)
            self._seq[stream.id] = seq + 1
        msg = FrameMessage(stream_id=stream.id, seq=seq, capture_ts_ns=raw.capture_ts_ns, crops=crops,
                           source_height=raw.bgr.shape[0], source_width=raw.bgr.shape[1])
        try:
            self._bus.publish(msg)
        except BusUnavailableError:
            self._observer.frames_dropped(stream.id, "bus_down")
            return
        except BusFullError:
            self._observer.frames_dropped(stream.id, "bus_full")
            return
        except BusError as exc:
            self._observer.frames_dropped(stream.id, "bus_error")
            log.debug("camera %s: frame %d dropped: %s", stream.id, seq, exc)
            return
        self._observer.frame_published(stream.id, time.perf_counter() - t0)
        self._count_evictions(stream.id)

    def _crops(self, stream: StreamConfig, bgr: Frame, whole: Frame) -> tuple[ZoneCrop, ...]:
        """The frame's model-ready crops: the whole picture (``full``) unless turned off, then each zone that is
        large enough on this camera's resolution (one too small is left out, and said once)."""
        crops = [ZoneCrop(FULL_ZONE, whole)] if stream.full_frame else []
        resolution_wh = (bgr.shape[1], bgr.shape[0])
        self._resolution_wh[stream.id] = resolution_wh
        problems: dict[str, str] = {}
        for zone in stream.zones:
            problem = zone.size_problem(resolution_wh)
            if problem is not None:
                problems[zone.id] = f"streams[{stream.id}].zones: {problem}"
                continue
            cut = cut_zone(bgr, zone)
            crops.append(ZoneCrop(zone.id, bgr_to_rgb(resize(cut, self.frame_height, self.frame_width, zone.resize))))
        if problems != self._zone_problems.get(stream.id, {}):
            for zone_id, problem in problems.items():
                log.error("camera %s: zone %s is not classified: %s", stream.id, zone_id, problem)
            self._zone_problems[stream.id] = problems
        return tuple(crops)

    def _store_preview(self, stream_id: str, raw: RawFrame) -> None:
        try:
            self._bus.put_expiring(stream_id, preview_key(stream_id), self._preview.encode(raw.bgr),
                                   self.cfg.console.preview_ttl_s)
        except BusError as exc:  # the console shows no picture for a while; nothing else depends on it
            log.debug("camera %s: preview not written: %s", stream_id, exc)

    def _judge_health(self, stream: StreamConfig, pixels: Frame) -> bool:
        """Feed the camera's health checks one sampled frame; True when the frame is not to be published."""
        health = self._health.get(stream.id)
        if health is None:
            return False
        changes = health.observe(pixels, time.monotonic(), time.time())
        if health.stats is not None:  # the gauges first: /metrics agrees with /readyz before the events go out
            self._observer.set_health(stream.id, health.stats, health.active)
        for condition, active in changes:
            if active:
                log.warning("camera %s: %s (%s)", stream.id, condition, describe(condition, stream.health))
            else:
                log.info("camera %s: no longer %s", stream.id, condition)
            self.announce(HealthEvent(stream.id, condition, active, time.time(),
                                      asdict(health.stats) if health.stats is not None else {}))
        if stream.health.skip_frozen and "frozen" in health.active:
            self._observer.frames_dropped(stream.id, "frozen")
            return True
        return False

    def _count_evictions(self, stream_id: str) -> None:
        """Every few seconds, add the frames evicted unread since the last check."""
        now = time.monotonic()
        checked_at, before = self._evicted.get(stream_id, (-math.inf, -1))
        if now - checked_at < self.eviction_check_s:
            return
        try:
            total = self._bus.evicted(stream_id)
        except BusError:
            return
        if before >= 0 and total >= before:  # smaller: Redis restarted empty, start over
            self._observer.frames_dropped(stream_id, "evicted", total - before)
        self._evicted[stream_id] = (now, total)

    # -- camera events -----------------------------------------------------------------------------

    def state_changed(self, stream: StreamConfig, state: CameraState, reason: str) -> None:
        """A camera's state changed (its :data:`~pipeline.ingest.camera.StateHandler`)."""
        self.announce(StateEvent(stream.id, state.value, reason, time.time()))

    def announce(self, event: CameraEvent) -> None:
        """Put a camera event on the results stream, where the sinks (events, MQTT) hear of it."""
        try:
            self._bus.publish_event(event.stream, event.to_fields(), self.cfg.redis.results_maxlen)
        except BusError as exc:  # /readyz and the metrics still say it; only the event is lost
            log.warning("camera %s: event not written (%s): %s", event.stream, event.as_dict()["event"], exc)

    def accept_view(self, stream_id: str) -> bool:
        """Make the camera's current view its reference (it was re-aimed on purpose); False: no such camera."""
        health = self._health.get(stream_id)
        if health is None:
            return False
        if health.accept_view():
            self.announce(HealthEvent(stream_id, "moved", False, time.time(),
                                      asdict(health.stats) if health.stats is not None else {}))
        log.info("camera %s: current view accepted as the reference", stream_id)
        return True

    def health_doc(self, stream_id: str) -> dict[str, Any]:
        """The camera's active conditions and since when, its resolution and its zones that are not classified
        (in /readyz and the camera's status)."""
        health = self._health.get(stream_id)
        resolution_wh = self._resolution_wh.get(stream_id)
        zones = {"zone_problems": dict(self._zone_problems.get(stream_id, {})),
                 "resolution_wh": list(resolution_wh) if resolution_wh else None}
        if health is None:
            return {"health": [], "health_since": {}, **zones}
        return {"health": health.active, "health_since": {k: round(v, 3) for k, v in health.since().items()}, **zones}
