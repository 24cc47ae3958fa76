"""Which cameras an ingest worker runs, and how they are kept running.

A worker runs the cameras of its shard (:func:`~pipeline.ingest.shard.owned_streams`, ``--shard i/n``)
among the YAML's cameras with the runtime changes on top (the console's camera store,
:class:`~pipeline.core.camera_store.StreamStore`, which :mod:`pipeline.ops.ingest_service` connects).
One :class:`~pipeline.ingest.camera.Camera` thread per camera hands each sampled frame to the
:class:`~pipeline.ingest.frame_path.FramePath`.

* :meth:`IngestWorker.reload` applies a new camera list: added cameras start, removed ones stop,
  changed ones restart, a new ``fps`` or new zones alone are applied in place (no reconnect), and the
  others are not touched;
* every :data:`~pipeline.ingest.pacing.FEEDBACK_EVERY_S` the cameras' queues on the bus set the rates
  they sample at (:class:`~pipeline.ingest.pacing.SamplingGovernor`); every :data:`STATUS_EVERY_S`
  each camera's status goes to Redis for the console, and a changed camera store is applied;
* :meth:`IngestWorker.status` is the ``/readyz`` document (times in ISO 8601 UTC, URLs redacted).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from pipeline.bus.publisher import FrameBus
from pipeline.core.camera_store import StreamStore, effective_streams
from pipeline.core.clock import iso_utc
from pipeline.core.config import StreamConfig, VigilConfig, sink_name
from pipeline.core.errors import BusError
from pipeline.core.keys import camera_status_key
from pipeline.ingest.camera import Camera, CameraObserver, CameraState
from pipeline.ingest.frame_path import DEFAULT_FRAME_SIZE, FrameObserver, FramePath
from pipeline.ingest.pacing import FEEDBACK_EVERY_S, QueueSignal, SamplingGovernor
from pipeline.ingest.shard import owned_streams
from pipeline.results.dead_letter import merge_rejections, read_rejections

log = logging.getLogger("vigil.ingest")

STATUS_EVERY_S = 1.0  # how often each camera's status goes to Redis (for the console)
STATUS_TTL_S = 5.0  # a status not refreshed this long is gone: its worker stopped or lost Redis


class IngestObserver(CameraObserver, FrameObserver, Protocol):
    """Everything a worker reports (:class:`pipeline.ops.metrics.IngestMetrics` exports it)."""

    def set_streams(self, stream_ids: Iterable[str]) -> None: ...

    def set_sampling_rate(self, stream_id: str, configured_fps: float, effective_fps: float) -> None: ...


def _batch_share(cfg: VigilConfig) -> float:
    """What one batch cycle of every replica takes from each camera (at least one frame)."""
    inf = cfg.inference
    return max(1.0, inf.batch_size * inf.replicas / max(1, len(cfg.streams)))


class IngestWorker:
    """The cameras of one shard, their frames, their sampling rates and their status."""

    def __init__(self, cfg: VigilConfig, bus: FrameBus, observer: IngestObserver, shard: tuple[int, int] = (0, 1),
                 frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> None:
        self.cfg = cfg
        self.shard = shard
        self.cameras: dict[str, Camera] = {}
        self.frames = FramePath(cfg, bus, observer, frame_size)
        self.store: StreamStore | None = None  # cameras changed at runtime (the console's camera store)
        self._store_version = -1  # the store's version when its changes were last applied
        self._bus = bus
        self._observer = observer
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._feedback = threading.Thread(target=self._adapt_rates, name="ingest-feedback", daemon=True)
        self._stale_seen: dict[str, int] = {}  # camera -> its stale drops at the last feedback tick
        self._governor = SamplingGovernor(batch_share=_batch_share(cfg))
        self._yaml_streams = list(cfg.streams)

    def owned(self) -> list[StreamConfig]:
        """The cameras of this worker's shard, the runtime changes included."""
        return owned_streams(self.cfg, self.shard)

    def read_store(self) -> None:
        """Take the YAML's cameras with the camera store's changes (at start, before :meth:`start_cameras`)."""
        self.cfg = self.cfg.model_copy(update={"streams": self._streams_now()})

    def start_cameras(self) -> None:
        """Start the owned cameras and the feedback loop."""
        self._apply(self.owned())
        self._feedback.start()

    def stop_cameras(self) -> None:
        self._stop.set()
        if self._feedback.is_alive():
            self._feedback.join(5)
        with self._lock:
            cameras = list(self.cameras.values())
            self.cameras = {}
        self._stop_all(cameras)

    @staticmethod
    def _stop_all(cameras: list[Camera]) -> None:
        for cam in cameras:  # signal every camera first, then wait: stops run in parallel
            cam.stop(join_timeout_s=0)
        for cam in cameras:
            if not cam.stop():
                log.warning("camera %s did not stop in time (stuck in an open); abandoning it", cam.id)

    # -- which cameras -----------------------------------------------------------------------------

    def _apply(self, wanted: list[StreamConfig]) -> None:
        """Start/stop/restart cameras so that exactly ``wanted`` run; leave unchanged ones alone."""
        by_id = {s.id: s for s in wanted}
        with self._lock:
            for stream_id, cam in self.cameras.items():  # a new fps or zones alone: applied in place, no reconnect
                new = by_id.get(stream_id)
                if new is not None and new != cam.stream and cam.retune(new):
                    self._observer.set_sampling_rate(stream_id, new.fps, cam.pacing.rate_fps)
            stale = [c for stream_id, c in self.cameras.items() if by_id.get(stream_id) != c.stream]
            for cam in stale:
                del self.cameras[cam.id]
        self._stop_all(stale)
        self._observer.set_streams(by_id)
        with self._lock:
            for stream_id, stream in by_id.items():
                if stream_id not in self.cameras:
                    self.frames.add(stream)
                    cam = Camera(stream, self.cfg.ingest, self.frames.handle, self._observer,
                                 self.frames.state_changed)
                    self.cameras[stream_id] = cam.start()
                    self._observer.set_sampling_rate(stream_id, stream.fps, cam.pacing.rate_fps)
            self.frames.keep_only(by_id)

    def reload(self, cfg: VigilConfig) -> None:
        """Apply a new config's camera list (SIGHUP). Other sections need a restart."""
        for section in ("redis", "ingest", "metrics"):
            if getattr(cfg, section) != getattr(self.cfg, section):
                log.warning("config reload: changes to %r apply after a restart; only streams reload",
                            section)
        self._yaml_streams = list(cfg.streams)
        self._refresh("config reloaded")

    def _refresh(self, why: str) -> None:
        """Run the YAML's cameras with the camera store's changes on top."""
        with self._refresh_lock:
            self.cfg = self.cfg.model_copy(update={"streams": self._streams_now()})
            self._governor.batch_share = _batch_share(self.cfg)  # the batch is shared by the new camera count
            before = set(self.cameras)
            self._apply(self.owned())
            after = set(self.cameras)
        log.info("%s: %d camera(s); added %s, removed %s", why, len(after),
                 sorted(after - before) or "none", sorted(before - after) or "none")

    def _streams_now(self) -> list[StreamConfig]:
        """The YAML's cameras with the camera store's changes on top (:func:`effective_streams`)."""
        store = self.store
        if store is None:
            return list(self._yaml_streams)
        try:
            version = store.version()  # before the changes: a change made in between is seen next time
            streams, problems = effective_streams(self._yaml_streams, store.changes())
        except BusError as exc:  # Redis away: keep what runs (the YAML's cameras at start)
            log.warning("camera store: %s; running the cameras known so far", exc)
            return list(self.cfg.streams) if self.cameras else list(self._yaml_streams)
        self._store_version = version
        for problem in problems:
            log.warning("%s", problem)
        return streams

    def _store_changed(self) -> bool:
        """Whether the camera store changed since its changes were last applied (not while Redis is away)."""
        store = self.store
        if store is None:
            return False
        try:
            return store.version() != self._store_version
        except BusError:
            return False

    # -- the feedback loop -------------------------------------------------------------------------

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
            for stream_id, (queued, wait_s, stale) in self._bus.queue_state(cameras).items():
                signals[stream_id] = QueueSignal(queued, wait_s, max(0, stale - self._stale_seen.get(stream_id, stale)))
                self._stale_seen[stream_id] = stale  # the first tick only sets the baseline
            self._governor.update({stream_id: cameras[stream_id].pacing for stream_id in signals}, signals)
            for stream_id in signals:
                self._observer.set_sampling_rate(stream_id, cameras[stream_id].stream.fps,
                                                 cameras[stream_id].pacing.rate_fps)

    def _write_statuses(self, cameras: dict[str, Camera]) -> None:
        """Each camera's status into Redis for the console on any machine; it expires when this worker dies."""
        for stream_id, cam in cameras.items():
            try:
                self._bus.put_expiring(stream_id, camera_status_key(stream_id), json.dumps(self._camera_doc(cam)),
                                       STATUS_TTL_S)
            except BusError as exc:  # /readyz and the metrics still say it; the console shows it as unknown
                log.debug("camera %s: status not written: %s", stream_id, exc)

    # -- status ------------------------------------------------------------------------------------

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
            "bus": self._bus.shard_url(c.id), "shard": f"{self.shard[0]}/{self.shard[1]}",
            **self.frames.health_doc(c.id),
        }

    def camera_state(self, stream_id: str) -> CameraState | None:
        cam = self.cameras.get(stream_id)
        return cam.state if cam is not None else None

    def accept_view(self, stream_id: str) -> bool:
        """Make the camera's current view its health reference; False: this worker runs no such camera."""
        return self.frames.accept_view(stream_id)
