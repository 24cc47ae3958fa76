"""`vigil capture --stream ID --every 5s --out DIR`: save frames of a live camera for labelling.

The camera is opened exactly as the ingest worker opens it (:class:`pipeline.ingest.source.VideoSource`
with the stream's transport and the ``ingest:`` timeouts) and read at the live edge by a
:class:`pipeline.ingest.source.LiveEdgeReader`, so a saved frame is the newest one, never a stale buffer.
The first frame is saved at once, then one every interval, as full-resolution JPEGs named
``<stream>_<UTC time>_<n>.jpg``. A lost or stalled connection is reopened with the same jittered
backoff as ingest; a camera that cannot be opened at all the first time is an error.
Sort the files into one folder per class afterwards (see :mod:`models.dataset`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2

from pipeline.core.backoff import Backoff
from pipeline.core.config import StreamConfig, VigilConfig
from pipeline.core.errors import ConfigError, SourceError
from pipeline.ingest.source import LiveEdgeReader, RawFrame, SourceOptions, VideoSource

log = logging.getLogger(__name__)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


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
        self._stop = threading.Event()
        self._backoff = Backoff(cfg.ingest.backoff_base_s, cfg.ingest.backoff_cap_s)

    def stop(self) -> None:
        self._stop.set()

    def _done(self, deadline: float | None) -> bool:
        if self._stop.is_set() or (self.opts.count is not None and len(self.saved) >= self.opts.count):
            return True
        return deadline is not None and time.monotonic() >= deadline

    def run(self) -> list[Path]:
        """Capture until done; returns the files written."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.opts.duration_s if self.opts.duration_s else None
        first = True
        while not self._done(deadline):
            source = VideoSource(SourceOptions.from_config(self.stream, self.ingest))
            try:
                source.open()
            except SourceError as exc:
                if first:
                    raise
                reason: str | None = exc.reason
            else:
                first = False
                reason = self._sample(LiveEdgeReader(source, f"capture-{self.stream.id}"), deadline)
            if reason:  # also after a lost connection: a source that opens and ends at once must not spin
                delay = self._backoff.next_delay_s()
                log.warning("capture %s: %s; reconnecting in %.1f s", self.stream.id, reason, delay)
                self._stop.wait(delay)
        return self.saved

    def _sample(self, reader: LiveEdgeReader, deadline: float | None) -> str | None:
        """Save frames from one connection; the reason it ended, or None when capture is done."""
        last_index = -1
        next_tick = time.monotonic()
        reader.start()
        try:
            while not self._done(deadline):
                if self._stop.wait(max(0.0, next_tick - time.monotonic())):
                    return None
                frame = reader.wait_newer(last_index, timeout_s=self.ingest.stall_timeout_s)
                if frame is None:
                    return reader.end_reason or f"no frame for {self.ingest.stall_timeout_s:g} s"
                self._backoff.reset()
                last_index = frame.index
                self._save(frame)
                next_tick = max(next_tick + self.opts.every_s, time.monotonic())
        finally:
            # Wait for the reader to leave OpenCV: a process that exits while FFmpeg still reads aborts.
            reader.abandon(join_timeout_s=self.ingest.read_timeout_s + 1)
        return None

    def _save(self, frame: RawFrame) -> None:
        stamp = datetime.fromtimestamp(frame.capture_ts_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        path = self.out_dir / f"{self.stream.id}_{stamp}Z_{len(self.saved):05d}.jpg"
        if not cv2.imwrite(str(path), frame.bgr, [cv2.IMWRITE_JPEG_QUALITY, self.opts.jpeg_quality]):
            raise SourceError(f"cannot write {path} (is the folder writable?)", "write failed")
        self.saved.append(path)
        if self.on_saved is not None:
            self.on_saved(path)

