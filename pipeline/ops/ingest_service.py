"""The ingest service: many cameras in one process -> sampled, model-sized RGB frames on Redis Streams.

One thread per camera (:class:`~pipeline.ingest.camera.Camera`: state machine, live-edge reader,
sampler at the stream's fps); each sampled frame is resized to the model input size with the
stream's policy, converted BGR->RGB and published with :class:`~pipeline.bus.publisher.FrameBus`.
When Redis is down the cameras keep reading, frames are counted as dropped, and the bus retries
with backoff. ``vigil ingest`` runs it as a process (:mod:`workers.ingest`); ``vigil run`` in-process.

* :meth:`IngestService.reload` applies a new camera list: added cameras start, removed ones stop,
  changed ones restart, and the others are not touched;
* HTTP on ``metrics.host:metrics.port`` (port 0 picks a free one): ``/metrics`` (Prometheus),
  ``/healthz`` (process alive), ``/readyz`` (JSON: ready when every Redis instance is up with room and at
  least one camera is live, with each camera's state, and per sink the records its output refused for
  good and the last refusal (:mod:`pipeline.results.dead_letter`; they do not make it not ready);
  times in ISO 8601 UTC; URLs redacted).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.camera_store import StreamStore, effective_streams
from pipeline.core.clock import iso_utc
from pipeline.core.config import StreamConfig, VigilConfig, sink_name
from pipeline.core.errors import BusError, BusFullError, BusUnavailableError, VigilError
from pipeline.core.keys import camera_status_key, preview_key
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.ingest.camera import Camera, CameraState
from pipeline.ingest.health import CameraHealth, describe
from pipeline.ingest.pacing import FEEDBACK_EVERY_S, QueueSignal, SamplingGovernor
from pipeline.ingest.preview import PreviewMaker
from pipeline.ingest.shard import owned_streams
from pipeline.ingest.source import Frame, RawFrame
from pipeline.ops.metrics import CONTENT_TYPE_LATEST, IngestMetrics, render
from pipeline.results.camera_event import CameraEvent, HealthEvent, StateEvent
from pipeline.results.dead_letter import merge_rejections, read_rejections

log = logging.getLogger("vigil.ingest")

DEFAULT_FRAME_SIZE = (224, 224)
EVICTION_CHECK_S = 5.0
STATUS_EVERY_S = 1.0  # how often each camera's status goes to Redis (for the console)
STATUS_TTL_S = 5.0  # a status not refreshed this long is gone: its worker stopped or lost Redis
_ENTRY_OVERHEAD_BYTES = 256  # a stream entry's id, field names and listpack headers


def _batch_share(cfg: VigilConfig) -> float:
    """What one batch cycle of every replica takes from each camera (at least one frame)."""
    inf = cfg.inference
    return max(1.0, inf.batch_size * inf.replicas / max(1, len(cfg.streams)))


class IngestService:
    """``with IngestService(cfg) as worker: ...`` runs every owned camera until the block exits."""

    def __init__(self, cfg: VigilConfig, shard: tuple[int, int] = (0, 1),
                 frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                 registry: CollectorRegistry | None = None) -> None:
        cfg.redis.bus_urls("the ingest worker")
        self.cfg = cfg
        self.shard = shard
        self.frame_height, self.frame_width = frame_size
        self.metrics = IngestMetrics(registry)
        self.cameras: dict[str, Camera] = {}
        self._health: dict[str, CameraHealth] = {}  # camera -> its health checks (fed in the camera's thread)
        self._seq: dict[str, int] = {}
        self._evicted: dict[str, tuple[float, int]] = {}  # stream -> (checked at, trimmed unread)
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._feedback = threading.Thread(target=self._adapt_rates, name="ingest-feedback", daemon=True)
        self._stale_seen: dict[str, int] = {}  # camera -> its stale drops at the last feedback tick
        self._governor = SamplingGovernor(batch_share=_batch_share(cfg))
        self.eviction_check_s = EVICTION_CHECK_S
        self._bus = FrameBus(BusOptions.from_config(cfg), self.metrics.set_bus_up)
        self._preview = PreviewMaker(cfg.console)
        self._yaml_streams = list(cfg.streams)
        self._store: StreamStore | None = None  # cameras changed at runtime (the console), on shard 0
        self._store_version = -1
        self._refresh_lock = threading.Lock()

    @property
    def frame_bytes(self) -> int:
        """About what one published frame takes in Redis (raw pixels; JPEG about a sixth of them)."""
        pixels = self.frame_height * self.frame_width * 3
        return (pixels if self.cfg.redis.frame_encoding == "raw" else pixels // 6) + _ENTRY_OVERHEAD_BYTES

    @property
    def http_port(self) -> int:
        return self._http.server_address[1] if self._http is not None else 0

    def __enter__(self) -> IngestService:
        self._bus.__enter__()
        try:
            # Short timeouts: the feedback loop asks for the store's version every second and must not hang
            # on a frozen Redis (the frames go through the bus, with its own backoff).
            self._store = StreamStore(*self._bus.opts.layout.connect_first(min(1.0, self.cfg.redis.socket_timeout_s),
                                                                           fail_fast=True))
            self.cfg = self.cfg.model_copy(update={"streams": self._with_store()})
            owned = [s.id for s in owned_streams(self.cfg, self.shard)]
            for warning in self._bus.capacity_warnings(owned, self.frame_bytes):
                log.warning("%s", warning)
            if self.cfg.metrics.enabled:
                self._start_http()
            self._apply(owned_streams(self.cfg, self.shard))
            self._feedback.start()
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
        self._stop.set()
        if self._feedback.is_alive():
            self._feedback.join(5)
        with self._lock:
            cameras = list(self.cameras.values())
            self.cameras = {}
        self._stop_all(cameras)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self._bus.__exit__(None, None, None)
        if self._store is not None:
            self._store.client.close()
            self._store = None

    @staticmethod
    def _stop_all(cameras: list[Camera]) -> None:
        for cam in cameras:  # signal every camera first, then wait: stops run in parallel
            cam.stop(join_timeout_s=0)
        for cam in cameras:
            if not cam.stop():
                log.warning("camera %s did not stop in time (stuck in an open); abandoning it", cam.id)

    # -- cameras -----------------------------------------------------------------------------------

    def _apply(self, wanted: list[StreamConfig]) -> None:
        """Start/stop/restart cameras so that exactly ``wanted`` run; leave unchanged ones alone."""
        by_id = {s.id: s for s in wanted}
        with self._lock:
            for sid, cam in self.cameras.items():  # a new fps alone is applied in place: no reconnect
                new = by_id.get(sid)
                if new is not None and new != cam.stream and cam.retune(new):
                    self.metrics.set_sampling_rate(sid, new.fps, cam.pacing.rate_fps)
            stale = [c for sid, c in self.cameras.items() if by_id.get(sid) != c.stream]
            for cam in stale:
                del self.cameras[cam.id]
        self._stop_all(stale)
        self.metrics.set_streams(by_id)
        with self._lock:
            for sid, stream in by_id.items():
                if sid not in self.cameras:
                    self._seq.setdefault(sid, 0)
                    self._health[sid] = CameraHealth(stream.health)
                    cam = Camera(stream, self.cfg.ingest, self._handle_sample, self.metrics, self._state_changed)
                    self.cameras[sid] = cam.start()
                    self.metrics.set_sampling_rate(sid, stream.fps, cam.pacing.rate_fps)
            for sid in list(self._seq):
                if sid not in by_id:
                    del self._seq[sid]
                    self._health.pop(sid, None)

    def reload(self, cfg: VigilConfig) -> None:
        """Apply a new config's camera list (SIGHUP). Other sections need a restart."""
        for section in ("redis", "ingest", "metrics"):
            if getattr(cfg, section) != getattr(self.cfg, section):
                log.warning("config reload: changes to %r apply after a restart; only streams reload",
                            section)
        self._yaml_streams = list(cfg.streams)
        self._refresh("config reloaded")

    def _refresh(self, why: str) -> None:
        """Run the YAML's cameras with the camera store's changes on top (:mod:`pipeline.core.camera_store`)."""
        with self._refresh_lock:
            self.cfg = self.cfg.model_copy(update={"streams": self._with_store()})
            self._governor.batch_share = _batch_share(self.cfg)  # the batch is shared by the new camera count
            before = set(self.cameras)
            self._apply(owned_streams(self.cfg, self.shard))
            after = set(self.cameras)
        log.info("%s: %d camera(s); added %s, removed %s", why, len(after),
                 sorted(after - before) or "none", sorted(before - after) or "none")

    def _with_store(self) -> list[StreamConfig]:
        if self._store is None:
            return list(self._yaml_streams)
        try:
            self._store_version = self._store.version()
            streams, problems = effective_streams(self._yaml_streams, self._store.changes())
        except BusError as exc:  # Redis away: keep what runs (the YAML's cameras at start)
            log.warning("camera store: %s; running the cameras known so far", exc)
            return list(self.cfg.streams) if self.cameras else list(self._yaml_streams)
        for problem in problems:
            log.warning("%s", problem)
        return streams

    def _store_changed(self) -> bool:
        try:
            return self._store is not None and self._store.version() != self._store_version
        except BusError:
            return False

    def _handle_sample(self, stream: StreamConfig, raw: RawFrame) -> None:
        """Resize, convert and publish one sampled frame (runs in the camera thread)."""
        t0 = time.perf_counter()
        if self._preview.due(stream.id):
            self._store_preview(stream.id, raw)
        pixels = bgr_to_rgb(resize(raw.bgr, self.frame_height, self.frame_width, stream.resize))
        if self._judge_health(stream, pixels):
            return
        with self._lock:
            seq = self._seq.get(stream.id, 0)
            self._seq[stream.id] = seq + 1
        msg = FrameMessage(stream_id=stream.id, seq=seq, capture_ts_ns=raw.capture_ts_ns, pixels=pixels,
                           source_height=raw.bgr.shape[0], source_width=raw.bgr.shape[1])
        try:
            self._bus.publish(msg)
        except BusUnavailableError:
            self.metrics.frames_dropped(stream.id, "bus_down")
            return
        except BusFullError:
            self.metrics.frames_dropped(stream.id, "bus_full")
            return
        except BusError as exc:
            self.metrics.frames_dropped(stream.id, "bus_error")
            log.debug("camera %s: frame %d dropped: %s", stream.id, seq, exc)
            return
        self.metrics.frame_published(stream.id, time.perf_counter() - t0)
        self._count_evictions(stream.id)

    def _store_preview(self, sid: str, raw: RawFrame) -> None:
        try:
            self._bus.put_expiring(sid, preview_key(sid), self._preview.encode(raw.bgr), self.cfg.console.preview_ttl_s)
        except BusError as exc:  # the console shows no picture for a while; nothing else depends on it
            log.debug("camera %s: preview not written: %s", sid, exc)

    def _judge_health(self, stream: StreamConfig, pixels: Frame) -> bool:
        """Feed the camera's health checks one sampled frame; True when the frame is not to be published."""
        health = self._health.get(stream.id)
        if health is None:
            return False
        changes = health.observe(pixels, time.monotonic(), time.time())
        if health.stats is not None:  # the gauges first: /metrics agrees with /readyz before the events go out
            self.metrics.set_health(stream.id, health.stats, health.active)
        for condition, active in changes:
            if active:
                log.warning("camera %s: %s (%s)", stream.id, condition, describe(condition, stream.health))
            else:
                log.info("camera %s: no longer %s", stream.id, condition)
            self._announce(HealthEvent(stream.id, condition, active, time.time(),
                                       asdict(health.stats) if health.stats is not None else {}))
        if stream.health.skip_frozen and "frozen" in health.active:
            self.metrics.frames_dropped(stream.id, "frozen")
            return True
        return False

    def _state_changed(self, stream: StreamConfig, state: CameraState, reason: str) -> None:
        self._announce(StateEvent(stream.id, state.value, reason, time.time()))

    def _announce(self, event: CameraEvent) -> None:
        """Put a camera event on the results stream, where the sinks (events, MQTT) hear of it."""
        try:
            self._bus.publish_event(event.stream, event.to_fields(), self.cfg.redis.results_maxlen)
        except BusError as exc:  # /readyz and the metrics still say it; only the event is lost
            log.warning("camera %s: event not written (%s): %s", event.stream, event.as_dict()["event"], exc)

    def accept_view(self, sid: str) -> bool:
        """Make the camera's current view its reference (it was re-aimed on purpose); False: no such camera."""
        health = self._health.get(sid)
        if health is None:
            return False
        if health.accept_view():
            self._announce(HealthEvent(sid, "moved", False, time.time(),
                                       asdict(health.stats) if health.stats is not None else {}))
        log.info("camera %s: current view accepted as the reference", sid)
        return True

    def _count_evictions(self, sid: str) -> None:
        """Every few seconds, add the frames Redis trimmed unread since the last check."""
        now = time.monotonic()
        checked_at, before = self._evicted.get(sid, (-math.inf, -1))
        if now - checked_at < self.eviction_check_s:
            return
        try:
            total = self._bus.trimmed_unread(sid)
        except BusError:
            return
        if before >= 0 and total >= before:  # smaller: Redis restarted empty, start over
            self.metrics.frames_dropped(sid, "evicted", total - before)
        self._evicted[sid] = (now, total)

    def _adapt_rates(self) -> None:
        """Every FEEDBACK_EVERY_S: the cameras' queues on the bus set the rates they sample at (see pacing);
        every STATUS_EVERY_S the cameras' statuses go to Redis."""
        status_due = 0.0
        while not self._stop.wait(FEEDBACK_EVERY_S):
            with self._lock:
                cameras = dict(self.cameras)
            if time.monotonic() >= status_due:
                status_due = time.monotonic() + STATUS_EVERY_S
                self._write_statuses(cameras)
                if self._store_changed():
                    self._refresh("camera store changed")
                    continue
            signals = {}
            for sid, (queued, wait_s, stale) in self._bus.queue_state(cameras).items():
                signals[sid] = QueueSignal(queued, wait_s, max(0, stale - self._stale_seen.get(sid, stale)))
                self._stale_seen[sid] = stale  # the first tick only sets the baseline
            self._governor.update({sid: cameras[sid].pacing for sid in signals}, signals)
            for sid in signals:
                self.metrics.set_sampling_rate(sid, cameras[sid].stream.fps, cameras[sid].pacing.rate_fps)

    # -- status and HTTP ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /readyz document: ready when every Redis instance is up with room, and (when this shard has
        cameras) at least one camera is live; ``not_ready`` says what is missing. Every URL is redacted."""
        bus = self._bus.health()
        with self._lock:
            cameras = list(self.cameras.values())
        cams = [self._camera_doc(c) for c in cameras]
        missing = [f"Redis {b['url']} is {'down' if not b['up'] else 'full'}" for b in bus
                   if not b["up"] or b["full"]]
        if cams and not any(c["state"] == CameraState.LIVE for c in cams):
            missing.append(f"no camera is live yet (of {len(cams)})")
        sinks = [sink_name(s, i) for i, s in enumerate(self.cfg.sinks)]
        rejections = merge_rejections(sinks, self._bus.read_each("HGETALL", read_rejections))
        return {"ready": not missing, "not_ready": missing, "checked_at": iso_utc(time.time()),
                "shard": f"{self.shard[0]}/{self.shard[1]}", "cameras": cams, "bus": bus, "sinks": rejections}

    def _camera_doc(self, c: Camera) -> dict[str, Any]:
        """One camera in /readyz and in its Redis status (:func:`pipeline.core.keys.camera_status_key`)."""
        return {
            "id": c.id, "url": c.stream.redacted_url(), "state": c.state.value,
            "since": iso_utc(c.state_since_s), "since_s": round(time.time() - c.state_since_s, 3),
            "last_error": c.last_error, "previous_error": c.previous_error,
            "previous_error_at": iso_utc(c.previous_error_at_s),
            "reconnects": c.reconnects, "last_frame_age_s": round(c.last_frame_age_s(), 3),
            "fps": {"configured": c.stream.fps, "effective": round(c.pacing.rate_fps, 2)},
            "bus": self._bus.instance_url(c.id), "shard": f"{self.shard[0]}/{self.shard[1]}",
            **self._health_doc(c.id),
        }

    def _write_statuses(self, cameras: dict[str, Camera]) -> None:
        """Each camera's status into Redis for the console on any machine; it expires when this worker dies."""
        for sid, cam in cameras.items():
            try:
                self._bus.put_expiring(sid, camera_status_key(sid), json.dumps(self._camera_doc(cam)), STATUS_TTL_S)
            except BusError as exc:  # /readyz and the metrics still say it; the console shows it as unknown
                log.debug("camera %s: status not written: %s", sid, exc)

    def _health_doc(self, sid: str) -> dict[str, Any]:
        health = self._health.get(sid)
        if health is None:
            return {"health": [], "health_since": {}}
        return {"health": health.active, "health_since": {k: round(v, 3) for k, v in health.since().items()}}

    def camera_state(self, sid: str) -> CameraState | None:
        cam = self.cameras.get(sid)
        return cam.state if cam is not None else None

    def _start_http(self) -> None:
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, render(worker.metrics.registry))
                elif path == "/healthz":
                    self._send(200, "text/plain; charset=utf-8", b"ok\n")
                elif path == "/readyz":
                    doc = worker.status()
                    self._send(200 if doc["ready"] else 503, "application/json",
                               json.dumps(doc, indent=1).encode())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n")

            def do_POST(self) -> None:
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) == 3 and parts[0] == "cameras" and parts[2] == "accept-view":
                    if worker.accept_view(parts[1]):
                        self._send(200, "application/json", json.dumps({"accepted_view": parts[1]}).encode())
                    else:
                        self._send(404, "text/plain; charset=utf-8", f"no camera {parts[1]!r} here\n".encode())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try POST /cameras/<id>/accept-view\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        m = self.cfg.metrics
        try:
            self._http = ThreadingHTTPServer((m.host, m.port), Handler)
        except OSError as exc:
            raise VigilError(f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror or exc}; "
                             "set metrics.port (0 picks a free port)") from exc
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="ingest-http", daemon=True).start()
