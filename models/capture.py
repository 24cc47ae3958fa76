"""`vigil capture --stream ID --every 5s --out DIR`: save frames of a live camera for labelling.

The camera runs exactly as in the ingest worker: a :class:`pipeline.ingest.camera.Camera` (the stream's
transport, the ``ingest:`` timeouts, the live-edge reader, stall detection, reconnects with the jittered
backoff), sampling one frame per interval, so a saved frame is the newest one, never a stale buffer. The
first frame is saved at once, then one every interval, as full-resolution JPEGs named
``<stream>_<UTC time>_<n>.jpg``; with a zone (``--zone``), that part of the picture only, cut as the pipeline
cuts it, named ``<stream>_<zone>_<UTC time>_<n>.jpg``. A camera that cannot be opened at all the first time is
an error, and so is one that fails for good (the same permanent error ``ingest.max_failures`` times in a row).
Sort the files into one folder per class afterwards (see :mod:`models.dataset`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2

from pipeline.core.config import StreamConfig, VigilConfig, ZoneConfig
from pipeline.core.errors import ConfigError, SourceError
from pipeline.core.preprocess import cut_zone
from pipeline.ingest.camera import Camera, CameraState
from pipeline.ingest.source import RawFrame

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_OPEN_FAILED = "open failed: "  # how Camera words a failed open in last_error


def parse_interval(text: str) -> float:
    """``5s``, ``500ms``, ``2m``, ``1h`` or plain seconds (``2.5``) -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"interval {text!r} is not a positive duration like 5s, 500ms, 2m or 1h",
                          [f"--every: {text!r} is not a duration"])
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class CaptureOptions:
    every_s: float = 5.0
    count: int | None = None  # stop after this many frames
    duration_s: float | None = None  # stop after this long
    jpeg_quality: int = 95
    zone: str | None = None  # save this zone of the picture (streams[].zones), as the pipeline cuts it


def find_zone(stream: StreamConfig, zone_id: str) -> ZoneConfig:
    for z in stream.zones:
        if z.id == zone_id:
            return z
    known = ", ".join(z.id for z in stream.zones) or "none"
    raise ConfigError(f"camera {stream.id!r} has no zone {zone_id!r} (its zones: {known}); add it to "
                      f"streams[].zones", [f"--zone: {zone_id!r} is not a zone of {stream.id!r}"])


def find_stream(cfg: VigilConfig, stream_id: str) -> StreamConfig:
    for s in cfg.streams:
        if s.id == stream_id:
            return s
    known = ", ".join(s.id for s in cfg.streams) or "none"
    raise ConfigError(f"no stream {stream_id!r} in the config (streams: {known})",
                      [f"--stream: {stream_id!r} is not a configured stream"])


class FrameCapture:
    """Saves a camera's newest frame every ``every_s`` until ``count``/``duration_s`` or :meth:`stop`."""

    def __init__(self, cfg: VigilConfig, stream_id: str, out_dir: Path, opts: CaptureOptions,
                 on_saved: Callable[[Path], None] | None = None) -> None:
        self.stream = find_stream(cfg, stream_id)
        self.ingest = cfg.ingest
        self.out_dir = out_dir
        self.opts = opts
        self.on_saved = on_saved
        self.saved: list[Path] = []
        self.zone = find_zone(self.stream, opts.zone) if opts.zone is not None else None
        self._done = threading.Event()
        self._error: SourceError | None = None
        # The camera samples at one frame per interval: its first sample is due at once.
        self._camera = Camera(self.stream.model_copy(update={"fps": 1.0 / opts.every_s}), cfg.ingest,
                              self._on_sample, on_state=self._on_state)

    def stop(self) -> None:
        self._done.set()

    def run(self) -> list[Path]:
        """Capture until done; returns the files written."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.opts.duration_s if self.opts.duration_s else None
        self._camera.start()
        try:  # until count, duration, stop() or an error (short waits: a signal handler calls stop())
            while not self._done.wait(0.2) and (deadline is None or time.monotonic() < deadline):
                pass
        finally:
            self._done.set()
            # Wait for the reader to leave OpenCV: a process that exits while FFmpeg still reads aborts.
            self._camera.stop(reader_join_s=self.ingest.read_timeout_s + 1)
        if self._error is not None:
            raise self._error
        return self.saved

    def _on_state(self, stream: StreamConfig, state: CameraState, reason: str) -> None:
        """A first open that fails, or a camera that gives up, ends the capture with the reason."""
        error = self._camera.last_error
        first_open_failed = state == CameraState.BACKING_OFF and self._camera.reconnects == 0 \
            and error.startswith(_OPEN_FAILED)
        if first_open_failed or state == CameraState.FAILED:
            why = error.removeprefix(_OPEN_FAILED)
            self._error = SourceError(f"cannot open {stream.redacted_url()}: {why}", why)
            self._done.set()

    def _on_sample(self, stream: StreamConfig, frame: RawFrame) -> None:
        if self._done.is_set():
            return
        try:
            self._save(frame)
        except SourceError as exc:
            self._error = exc
            self._done.set()
            return
        if self.opts.count is not None and len(self.saved) >= self.opts.count:
            self._done.set()

    def _save(self, frame: RawFrame) -> None:
        stamp = datetime.fromtimestamp(frame.capture_ts_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        where = self.stream.id if self.zone is None else f"{self.stream.id}_{self.zone.id}"
        path = self.out_dir / f"{where}_{stamp}Z_{len(self.saved):05d}.jpg"
        picture = frame.bgr if self.zone is None else cut_zone(frame.bgr, self.zone)
        if not cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, self.opts.jpeg_quality]):
            raise SourceError(f"cannot write {path} (is the folder writable?)", "write failed")
        self.saved.append(path)
        if self.on_saved is not None:
            self.on_saved(path)
