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

import base64
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.config import IngestConfig, StreamConfig
from pipeline.core.errors import SourceError
from pipeline.core.redact import redact_url

log = logging.getLogger("vigil.sources")

Frame = npt.NDArray[np.uint8]
CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()
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


def is_local_file(url: str) -> bool:
    return "://" not in url and not url.startswith("/dev/video")


def local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return Path(url) if is_local_file(url) else None


def capture_options(opts: SourceOptions) -> str:
    """The ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` value (``key;value|key;value``) for these options."""
    pairs: list[tuple[str, str]] = []
    if opts.url.startswith(("rtsp://", "rtsps://")):
        pairs.append(("rtsp_transport", opts.transport))
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
        """Open the capture within ``open_timeout_s``; raise :class:`SourceError` with the cause."""
        self.close()
        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            reason = diagnose_open_failure(self.opts.url, min(self.opts.open_timeout_s, 3.0))
            raise SourceError(f"cannot open {self.redacted_url}: {reason}", reason)
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps < 1000 else 0.0
        self._frame_interval_s = 1.0 / self.fps if self.fps else 0.04
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = int(count) if 0 < count < 1e9 else 0

    def _open_capture(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _ms(self.opts.open_timeout_s),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, _ms(self.opts.read_timeout_s)]
        url = str(local_path(self.opts.url) or self.opts.url)
        with _OPEN_LOCK:
            previous = os.environ.get(CAPTURE_OPTIONS_ENV)
            options = capture_options(self.opts)
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
                              "video frame (corrupted, or not a video)")
        if self.frame_count and not self.opts.keyframes_only and got < 0.9 * self.frame_count:
            reason = (f"the file ended after {got} of {self.frame_count} frames: truncated or corrupted "
                      "(the decoder gave up)")
            raise SourceError(f"{self.redacted_url}: {reason}", reason)

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


# --------------------------------------------------------------------------------------------------
# Why did an open fail? OpenCV only says "not opened"; the operator needs the cause.
# --------------------------------------------------------------------------------------------------


def diagnose_open_failure(url: str, timeout_s: float) -> str:
    """A short, secret-free cause for a failed open, found by probing the source directly."""
    path = local_path(url)
    if path is not None:
        return _diagnose_file(path)
    if url.startswith("/dev/video"):
        return "no such video device" if not Path(url).exists() else "device busy or not a capture device"
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        return _diagnose_rtsp(url, timeout_s)
    return "FFmpeg could not open the stream (unreachable host, wrong path, or not a video stream)"


def _diagnose_file(path: Path) -> str:
    if not path.exists():
        return "file does not exist"
    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size == 0:
        return "file is empty"
    with path.open("rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        return "an MP4/MOV file FFmpeg cannot read: truncated or corrupted (its moov index is missing?)"
    return "not a video file FFmpeg recognises (or its header is corrupted)"


def _rtsp_request(host: str, port: int, uri: str, timeout_s: float, auth: str | None) -> tuple[int, str, str]:
    """One DESCRIBE on a fresh connection: (status, reason, WWW-Authenticate header)."""
    lines = [f"DESCRIBE {uri} RTSP/1.0", "CSeq: 1", "Accept: application/sdp", "User-Agent: vigil-probe"]
    if auth:
        lines.append(f"Authorization: {auth}")
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    m = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", status_line)
    if not m:
        raise ValueError("not an RTSP reply")
    challenge = next((h.split(":", 1)[1].strip() for h in header_lines
                      if h.lower().startswith("www-authenticate:")), "")
    return int(m.group(1)), m.group(2), challenge


def _authorization(challenge: str, user: str, password: str, uri: str) -> str:
    if not challenge.lower().startswith("digest"):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'DESCRIBE:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}"')


def _diagnose_rtsp(url: str, timeout_s: float) -> str:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (322 if parts.scheme == "rtsps" else 554)
    where = f"{host}:{port}"
    uri = urlunsplit((parts.scheme, where, parts.path, parts.query, ""))  # never the credentials
    if parts.scheme == "rtsps":
        return "FFmpeg could not open the TLS stream (unreachable, TLS/certificate or server problem)"
    try:
        status, reason, challenge = _rtsp_request(host, port, uri, timeout_s, None)
        if status == 401 and parts.username is not None:
            auth = _authorization(challenge, unquote(parts.username), unquote(parts.password or ""), uri)
            status, reason, challenge = _rtsp_request(host, port, uri, timeout_s, auth)
            if status == 401:
                return "credentials rejected by the server (RTSP 401 Unauthorized)"
    except ConnectionRefusedError:
        return f"connection refused by {where} (server down or wrong port)"
    except TimeoutError:
        return f"no answer from {where} within {timeout_s:g} s (host down, firewalled, or server frozen)"
    except (OSError, ValueError) as exc:
        return f"cannot talk RTSP to {where}: {getattr(exc, 'strerror', None) or exc}"
    return _STATUS_REASONS.get(status, f"the server answered RTSP {status} {reason}".strip())


_STATUS_REASONS = {
    401: "the server requires credentials (RTSP 401); put user:password in the URL",
    404: "no stream at this path on the server (RTSP 404 Not Found)",
    200: "the server offers the stream but FFmpeg could not open it (codec or transport problem)",
}
