"""Video sources: OpenCV's FFmpeg backend with explicit timeouts, and a live-edge reader thread.

* :class:`VideoSource` opens one capture (``rtsp://``, ``rtsps://``, ``http(s)://``, a local file, a
  ``/dev/videoN`` device) with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC``. RTSP
  transport (TCP/UDP) and keyframe-only decoding (FFmpeg ``avdiscard`` = ``nonkey``) can only be
  passed through the ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` environment variable, which OpenCV reads at
  open time; so it is set here, under a process-wide lock held for the whole open (OpenCV already
  serialises FFmpeg opens with its own global mutex, so the lock costs no parallelism).
  Local files are paced at their native fps (by presentation time) and optionally loop.
* :class:`LiveEdgeReader` owns an open source in its own thread, decodes continuously and keeps only
  the newest frame, so a slow consumer never builds latency. A reader stuck in a read can be
  abandoned: it releases its capture itself when OpenCV returns, so a stalled camera can be reopened
  at once without two threads ever touching one capture.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, cast

import cv2

from pipeline.core.config import IngestConfig, StreamConfig, local_path
from pipeline.core.errors import SourceError
from pipeline.core.frame import Frame
from pipeline.core.redact import redact_url
from pipeline.ingest.diagnose import diagnose_open_failure, rtsp_unreachable

log = logging.getLogger("vigil.sources")

CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# FFmpeg's own log, which OpenCV reads once, at its first capture: AV_LOG_FATAL. A camera joined between
# keyframes makes the H.264 decoder print an error for each frame it cannot reference yet ("mmco: unref
# short failure"), on every (re)connect; Vigil reports what matters itself (camera states, stalls).
FFMPEG_LOG_LEVEL_ENV, FFMPEG_LOG_LEVEL = "OPENCV_FFMPEG_LOGLEVEL", "8"
# How long FFmpeg analyses an RTSP stream at a camera's first open attempt. OpenCV opens the captures of
# a process one at a time, under one mutex, so this is also how long each camera holds up the others:
# with FFmpeg's default (about 1 s here) 200 cameras take 200 s to (re)connect. A camera whose codec
# parameters do not arrive within it (no SPS in the SDP, long keyframe interval) is opened again at once
# with FFmpeg's defaults.
QUICK_ANALYZE_US = 200_000
_OPEN_LOCK = threading.Lock()
_PROBE_TIMEOUT_S = 5.0  # how long an RTSP server may take to answer the probe's OPTIONS
_INGEST_DEFAULTS = IngestConfig()


@dataclass(frozen=True)
class SourceOptions:
    """How one source is opened; defaults are the config's (``streams[]`` and ``ingest:``)."""

    url: str
    transport: Literal["tcp", "udp"] = StreamConfig.model_fields["transport"].default
    keyframes_only: bool = StreamConfig.model_fields["keyframes_only"].default
    loop: bool = StreamConfig.model_fields["loop"].default
    paced: bool = True  # local files only: deliver frames at native fps, like a camera (not a config key)
    open_timeout_s: float = _INGEST_DEFAULTS.open_timeout_s
    read_timeout_s: float = _INGEST_DEFAULTS.read_timeout_s

    @classmethod
    def from_config(cls, stream: StreamConfig, ingest: IngestConfig) -> SourceOptions:
        """How a camera is opened: the stream's transport and the ``ingest:`` timeouts (ingest and capture)."""
        return cls(url=stream.url, transport=stream.transport, keyframes_only=stream.keyframes_only,
                   loop=stream.loop, open_timeout_s=ingest.open_timeout_s, read_timeout_s=ingest.read_timeout_s)


@dataclass(frozen=True)
class RawFrame:
    """A decoded BGR frame as OpenCV returns it, with its timing."""

    bgr: Frame
    index: int  # frames read from this source so far, from 0 (across file loops)
    pts_s: float  # presentation time in the stream (continues across loops)
    capture_ts_ns: int  # wall clock (time.time_ns) when the frame was decoded
    decode_latency_s: float


def capture_options(opts: SourceOptions, quick: bool = False) -> str:
    """The ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` value (``key;value|key;value``) for these options.

    ``quick``: FFmpeg analyses an RTSP stream for :data:`QUICK_ANALYZE_US` only, instead of about a
    second (its default stops once it has estimated the frame rate, which a live camera does not need).
    """
    pairs: list[tuple[str, str]] = []
    if opts.url.startswith(("rtsp://", "rtsps://")):
        pairs.append(("rtsp_transport", opts.transport))
        if quick:
            pairs.append(("analyzeduration", str(QUICK_ANALYZE_US)))
    elif opts.url.startswith("/dev/video"):
        pairs.append(("input_format", "video4linux2"))  # FFmpeg cannot guess a device's format
    if opts.keyframes_only:
        pairs.append(("avdiscard", "nonkey"))
    return "|".join(f"{k};{v}" for k, v in pairs)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class VideoSource:
    """One OpenCV FFmpeg capture. ``with VideoSource(opts) as src: frame = src.read()``."""

    def __init__(self, opts: SourceOptions, stop: threading.Event | None = None) -> None:
        self.opts = opts
        self.redacted_url = redact_url(opts.url)
        self.stop_event = stop or threading.Event()
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._pts_offset_s = 0.0  # added to the file's pts after each loop
        self._last_pts_s = 0.0
        self._frame_interval_s = 0.04
        self._pace_origin: tuple[float, float] | None = None  # (monotonic, pts) of the first frame
        self._pass_start_index = 0  # self._index when the current pass over a looping file began
        self.frame_count = 0  # as the container declares it (0 if unknown)
        self.width = self.height = 0
        self.fps = 0.0

    def __enter__(self) -> VideoSource:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open the capture within ``open_timeout_s``; raise :class:`SourceError` with the cause.

        An RTSP server is asked first, with an OPTIONS request of our own, whether it answers at all: OpenCV
        opens every FFmpeg capture of the process under one global mutex, so a server that accepts and
        never answers would otherwise hold up every other camera's (re)connect for ``open_timeout_s``.
        """
        self.close()
        if self.opts.url.lower().startswith("rtsp://"):
            unreachable = rtsp_unreachable(self.opts.url, min(self.opts.open_timeout_s, _PROBE_TIMEOUT_S))
            if unreachable:
                raise SourceError(f"cannot open {self.redacted_url}: {unreachable}", unreachable)
        cap = self._open_capture(quick=True)
        if not cap.isOpened() and capture_options(self.opts, quick=True) != capture_options(self.opts):
            cap.release()
            log.debug("%s: not open after a quick analysis; trying FFmpeg's full one", self.redacted_url)
            cap = self._open_capture(quick=False)
        if not cap.isOpened():
            cap.release()
            why = diagnose_open_failure(self.opts.url, min(self.opts.open_timeout_s, 3.0))
            raise SourceError(f"cannot open {self.redacted_url}: {why.reason}", why.reason, permanent=why.permanent)
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps < 1000 else 0.0
        self._frame_interval_s = 1.0 / self.fps if self.fps else 0.04
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = int(count) if 0 < count < 1e9 else 0

    def _open_capture(self, quick: bool) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _ms(self.opts.open_timeout_s),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, _ms(self.opts.read_timeout_s)]
        url = str(local_path(self.opts.url) or self.opts.url)
        with _OPEN_LOCK:
            os.environ[FFMPEG_LOG_LEVEL_ENV] = FFMPEG_LOG_LEVEL
            previous = os.environ.get(CAPTURE_OPTIONS_ENV)
            options = capture_options(self.opts, quick)
            if options:
                os.environ[CAPTURE_OPTIONS_ENV] = options
            else:
                os.environ.pop(CAPTURE_OPTIONS_ENV, None)
            try:
                return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
            except cv2.error as exc:
                raise SourceError(f"cannot open {self.redacted_url}: OpenCV error {exc.code}",
                                  "OpenCV refused the open parameters") from exc
            finally:
                # Restore, so that captures opened elsewhere in the process keep their own settings.
                if previous is None:
                    os.environ.pop(CAPTURE_OPTIONS_ENV, None)
                else:
                    os.environ[CAPTURE_OPTIONS_ENV] = previous

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def read(self) -> RawFrame | None:
        """The next frame, or None at the end of the stream / on a read error or timeout."""
        t0 = time.perf_counter()
        bgr = self._grab()
        if bgr is None and local_path(self.opts.url) is not None:
            self._check_complete()
            if not self.opts.loop:
                raise SourceError(f"{self.redacted_url}: end of file", "end of file")
            bgr = self._rewind()
        latency = time.perf_counter() - t0
        if bgr is None:
            return None
        pts = self._pts()
        self._pace(pts)
        frame = RawFrame(bgr=bgr, index=self._index, pts_s=pts, capture_ts_ns=time.time_ns(),
                         decode_latency_s=latency)
        self._index += 1
        return frame

    def _grab(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.redacted_url} is not open", "not open")
        ok, image = self._cap.read()
        return cast(Frame, image) if ok and image is not None else None

    def _pts(self) -> float:
        if self._cap is None:
            raise SourceError(f"{self.redacted_url} is not open", "not open")
        pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        pts = pos_ms / 1000.0 + self._pts_offset_s
        if pts <= self._last_pts_s and self._index:
            pts = self._last_pts_s + self._frame_interval_s  # stream without usable timestamps
        self._last_pts_s = pts
        return pts

    def _check_complete(self) -> None:
        """At the end of a local file: fail clearly if it held far fewer frames than it declares."""
        got = self._index - self._pass_start_index
        if got == 0:
            raise SourceError(f"{self.redacted_url}: no decodable frame", "the file has no decodable "
                              "video frame (corrupted, or not a video)", permanent=True)
        if self.frame_count and not self.opts.keyframes_only and got < 0.9 * self.frame_count:
            reason = (f"the file ended after {got} of {self.frame_count} frames: truncated or corrupted "
                      "(the decoder gave up)")
            raise SourceError(f"{self.redacted_url}: {reason}", reason, permanent=True)

    def _rewind(self) -> Frame | None:
        """Reopen a looping file at its start; its timestamps continue after the last frame."""
        self._pts_offset_s = self._last_pts_s + self._frame_interval_s
        self.open()
        self._pass_start_index = self._index
        return self._grab()

    def _pace(self, pts: float) -> None:
        """Hold a local file's frame until its presentation time, as a camera would deliver it."""
        if not self.opts.paced or local_path(self.opts.url) is None:
            return
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (now, pts)
            return
        due = self._pace_origin[0] + (pts - self._pace_origin[1])
        if due > now:
            self.stop_event.wait(due - now)


class LiveEdgeReader:
    """Decode a source continuously in a thread; keep only the newest frame.

    The reader owns the source from ``start()`` on and closes it when its thread ends.
    """

    def __init__(self, source: VideoSource, name: str,
                 on_frame: Callable[[RawFrame], None] | None = None) -> None:
        self._source = source
        self._on_frame = on_frame
        self._stop = source.stop_event  # pacing sleeps wake up on stop, too
        self._cond = threading.Condition()
        self._latest: RawFrame | None = None
        self._thread = threading.Thread(target=self._run, name=f"reader-{name}", daemon=True)
        self.started_monotonic = time.monotonic()
        self.last_frame_monotonic: float | None = None
        self.end_reason: str | None = None  # set when the thread stops reading by itself
        self.end_permanent = False  # ...for a reason that another open would meet again

    def start(self) -> LiveEdgeReader:
        self.started_monotonic = time.monotonic()
        self._thread.start()
        return self

    def __enter__(self) -> LiveEdgeReader:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abandon()

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self._source.read()
                if frame is None:
                    self._end("the stream ended, or no data within the read timeout")
                    return
                if self._stop.is_set():
                    return  # abandoned while reading: the frame belongs to nobody
                if self._on_frame is not None:
                    self._on_frame(frame)
                if frame.decode_latency_s >= 0.9 * self._source.opts.read_timeout_s:
                    # After a read timeout FFmpeg flushes the frames still inside the decoder, one per
                    # timeout: old pictures, and no sign that the stream is alive. Skip them.
                    continue
                with self._cond:
                    self._latest = frame
                    self.last_frame_monotonic = time.monotonic()
                    self._cond.notify_all()
        except SourceError as exc:
            self.end_permanent = exc.permanent
            self._end(exc.reason)
        except cv2.error as exc:
            self._end(f"OpenCV read error {exc.code}")
        finally:
            self._source.close()

    def _end(self, reason: str) -> None:
        with self._cond:
            self.end_reason = reason
            self._cond.notify_all()

    def wait_newer(self, after_index: int, timeout_s: float) -> RawFrame | None:
        """The newest frame if its index is above ``after_index``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._latest is not None and self._latest.index > after_index:
                    return self._latest
                left = deadline - time.monotonic()
                if left <= 0 or self.end_reason is not None:
                    return None
                self._cond.wait(left)

    def abandon(self, join_timeout_s: float = 0.0) -> bool:
        """Stop reading; the thread closes the capture when OpenCV returns. True if it has ended."""
        self._stop.set()
        if join_timeout_s > 0 and self._thread.is_alive():
            self._thread.join(join_timeout_s)
        return not self._thread.is_alive()
