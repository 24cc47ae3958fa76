"""The ingest worker: many cameras in one process -> sampled, model-sized RGB frames on Redis Streams.

One thread per camera (:class:`~pipeline.ingest.camera.Camera`: state machine, live-edge reader, sampler at
the stream's fps); each sampled frame is resized to the model input size with the stream's policy,
converted BGR->RGB and published with :class:`~pipeline.bus.publisher.FrameBus`. When Redis is down the
cameras keep reading, frames are counted as dropped, and the bus retries with backoff.

Operations:

* ``--shard i/n`` (or ``auto/n``: the ordinal of a Kubernetes StatefulSet pod, from its host name
  ``name-N``, read by the CLI) picks the cameras this worker owns: camera ``c`` belongs to shard
  ``sha1("vigil-shard:" + c) mod n``, so each camera has exactly one owner for any ``n``;
* SIGHUP reloads the config: added cameras start, removed ones stop, changed ones restart, and the
  others are not touched. SIGTERM/SIGINT stop every camera and exit 0;
* HTTP on ``metrics.host:metrics.port`` (port 0 picks a free one): ``/metrics`` (Prometheus),
  ``/healthz`` (process alive), ``/readyz`` (JSON: ready when every Redis instance is up, with each
  camera's state; URLs redacted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.config import StreamConfig, VigilConfig, load_config
from pipeline.core.errors import BusError, BusUnavailableError, ConfigError, VigilError
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.ingest.camera import Camera, CameraState
from pipeline.ingest.source import RawFrame
from pipeline.ops.metrics import CONTENT_TYPE_LATEST, IngestMetrics, render

log = logging.getLogger("vigil.ingest")

DEFAULT_FRAME_SIZE = (224, 224)
EVICTION_CHECK_S = 5.0


# --------------------------------------------------------------------------------------------------
# Sharding
# --------------------------------------------------------------------------------------------------


def ordinal_from_hostname(hostname: str) -> int:
    """The StatefulSet ordinal ``N`` of a pod host name ``<set-name>-N``."""
    m = re.search(r"-(\d+)$", hostname.split(".", 1)[0])
    if not m:
        raise ConfigError(f"host name {hostname!r} does not end in -N (a StatefulSet ordinal); "
                          "pass --shard i/n explicitly")
    return int(m.group(1))


def parse_shard(text: str, hostname: str | None = None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; ``"auto/n"`` takes ``i`` from a StatefulSet ``hostname``."""
    m = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--shard {text!r}: expected i/n (e.g. 0/4) or auto/n")
    count = int(m.group(2))
    if m.group(1) == "auto":
        if hostname is None:
            raise ConfigError("--shard auto/n needs the pod's host name")
        index = ordinal_from_hostname(hostname)
    else:
        index = int(m.group(1))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n (got i={index}, n={count})")
    return index, count


def shard_of(stream_id: str, count: int) -> int:
    # Salted differently from the Redis pinning so that shard i's cameras spread over all instances.
    digest = hashlib.sha1(f"vigil-shard:{stream_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % count


def owned_streams(cfg: VigilConfig, shard: tuple[int, int]) -> list[StreamConfig]:
    index, count = shard
    return [s for s in cfg.streams if shard_of(s.id, count) == index]


# --------------------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------------------


class IngestWorker:
    """``with IngestWorker(cfg) as worker: ...`` runs every owned camera until the block exits."""

    def __init__(self, cfg: VigilConfig, shard: tuple[int, int] = (0, 1),
                 frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                 registry: CollectorRegistry | None = None) -> None:
        if not cfg.redis.urls:
            raise BusError("redis.urls is empty: the ingest worker needs the Redis instance(s) of the frame bus "
                           "(or use `vigil run`, which starts one)")
        self.cfg = cfg
        self.shard = shard
        self.frame_height, self.frame_width = frame_size
        self.metrics = IngestMetrics(registry)
        self.cameras: dict[str, Camera] = {}
        self._seq: dict[str, int] = {}
        self._evicted: dict[str, tuple[float, int]] = {}  # stream -> (checked at, trimmed unread)
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.eviction_check_s = EVICTION_CHECK_S
        self._bus = FrameBus(BusOptions.from_config(cfg), self.metrics.set_bus_up)

    @property
    def bus(self) -> FrameBus:
        return self._bus

    @property
    def http_port(self) -> int:
        return self._http.server_address[1] if self._http is not None else 0

    def __enter__(self) -> IngestWorker:
        self._bus.__enter__()
        try:
            if self.cfg.metrics.enabled:
                self._start_http()
            self._apply(owned_streams(self.cfg, self.shard))
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
        with self._lock:
            cameras = list(self.cameras.values())
            self.cameras = {}
        self._stop_all(cameras)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self._bus.__exit__(None, None, None)

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
            stale = [c for sid, c in self.cameras.items() if by_id.get(sid) != c.stream]
            for cam in stale:
                del self.cameras[cam.id]
        self._stop_all(stale)
        self.metrics.set_streams(by_id)
        with self._lock:
            for sid, stream in by_id.items():
                if sid not in self.cameras:
                    self._seq.setdefault(sid, 0)
                    cam = Camera(stream, self.cfg.ingest, self._handle_sample, self.metrics)
                    self.cameras[sid] = cam.start()
            for sid in list(self._seq):
                if sid not in by_id:
                    del self._seq[sid]

    def reload(self, cfg: VigilConfig) -> None:
        """Apply a new config's camera list (SIGHUP). Other sections need a restart."""
        for section in ("redis", "ingest", "metrics"):
            if getattr(cfg, section) != getattr(self.cfg, section):
                log.warning("config reload: changes to %r apply after a restart; only streams reload",
                            section)
        self.cfg = self.cfg.model_copy(update={"streams": cfg.streams})
        before = set(self.cameras)
        self._apply(owned_streams(self.cfg, self.shard))
        after = set(self.cameras)
        log.info("config reloaded: %d camera(s); added %s, removed %s", len(after),
                 sorted(after - before) or "none", sorted(before - after) or "none")

    def _handle_sample(self, stream: StreamConfig, raw: RawFrame) -> None:
        """Resize, convert and publish one sampled frame (runs in the camera thread)."""
        t0 = time.perf_counter()
        pixels = bgr_to_rgb(resize(raw.bgr, self.frame_height, self.frame_width, stream.resize))
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
        except BusError as exc:
            self.metrics.frames_dropped(stream.id, "bus_error")
            log.debug("camera %s: frame %d dropped: %s", stream.id, seq, exc)
            return
        self.metrics.frame_published(stream.id, time.perf_counter() - t0)
        self._count_evictions(stream.id)

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

    # -- status and HTTP ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /readyz document. Every URL in it is redacted."""
        bus = self._bus.health()
        with self._lock:
            cameras = list(self.cameras.values())
        cams = [{
            "id": c.id, "url": c.stream.redacted_url(), "state": c.state.value,
            "since_s": round(time.time() - c.state_since_s, 3), "last_error": c.last_error,
            "reconnects": c.reconnects, "last_frame_age_s": round(c.last_frame_age_s(), 3),
            "bus": self._bus.instance_url(c.id),
        } for c in cameras]
        ready = all(b["up"] for b in bus)
        return {"ready": ready, "shard": f"{self.shard[0]}/{self.shard[1]}", "cameras": cams, "bus": bus}

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


# --------------------------------------------------------------------------------------------------
# The process: signals and reload
# --------------------------------------------------------------------------------------------------


def run(config_path: Path, shard: tuple[int, int] = (0, 1),
        frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> None:
    """Run the worker until SIGTERM/SIGINT; reload the config on SIGHUP. Call from the main thread."""
    cfg = load_config(config_path)
    stop, hup = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        (hup if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with IngestWorker(cfg, shard, frame_size) as worker:
        print(f"vigil ingest: http on port {worker.http_port}", flush=True)
        while not stop.is_set():
            if hup.wait(0.2):
                hup.clear()
                try:
                    worker.reload(load_config(config_path))
                except ConfigError as exc:
                    log.error("config reload failed, keeping the running config: %s", exc)
        log.info("shutting down: stopping %d camera(s)", len(worker.cameras))
    log.info("ingest worker stopped")
