"""One camera's life: open, read at the live edge, sample at the target fps, reconnect.

States (``CameraState``)::

    connecting --opened, first frame--> live --no frame for stall_timeout_s--> stalled --> connecting
        |                                 |
        +--open failed--> backing_off <---+--stream ended / read error / timeout
                              |
                              +--(wait jittered exponential backoff)--> connecting
                              +--the same permanent error max_failures times in a row--> failed
                                 (a file that is not a video, credentials rejected, no such path;
                                 until the config is reloaded). Transient errors retry for ever.

Stall detection does not rely on OpenCV's read timeout: measured here, a capture whose server froze
returns False only after about three times ``CAP_PROP_READ_TIMEOUT_MSEC`` and never delivers again.
So the camera thread watches the age of the newest frame itself; on a stall it abandons the stuck
reader (which closes its own capture once OpenCV returns) and reopens a fresh capture at once.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipeline.core.backoff import Backoff
from pipeline.core.config import IngestConfig, StreamConfig
from pipeline.core.errors import SourceError
from pipeline.ingest.pacing import RateController
from pipeline.ingest.source import LiveEdgeReader, RawFrame, SourceOptions, VideoSource

log = logging.getLogger("vigil.camera")


class CameraState(enum.StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"
    BACKING_OFF = "backing_off"
    FAILED = "failed"
    STOPPED = "stopped"


class CameraObserver(Protocol):
    """What a camera reports as it runs (:class:`pipeline.ops.metrics.IngestMetrics` exports it)."""

    def frame_decoded(self, stream_id: str, latency_seconds: float) -> None: ...

    def frame_sampled(self, stream_id: str) -> None: ...

    def reconnected(self, stream_id: str) -> None: ...

    def set_state(self, stream_id: str, state: str) -> None: ...

    def track_frame_age(self, stream_id: str, age_seconds: Callable[[], float]) -> None: ...


class NoCameraObserver:
    """The observer of a camera nobody watches (tests, ``vigil capture``: :mod:`models.capture`)."""

    def frame_decoded(self, stream_id: str, latency_seconds: float) -> None:
        return None

    def frame_sampled(self, stream_id: str) -> None:
        return None

    def reconnected(self, stream_id: str) -> None:
        return None

    def set_state(self, stream_id: str, state: str) -> None:
        return None

    def track_frame_age(self, stream_id: str, age_seconds: Callable[[], float]) -> None:
        return None


@dataclass(frozen=True)
class Transition:
    at_s: float  # time.time()
    state: CameraState
    reason: str


SampleHandler = Callable[[StreamConfig, RawFrame], None]
StateHandler = Callable[[StreamConfig, "CameraState", str], None]  # called at each change, with the reason


#: What a running camera takes without reconnecting (:meth:`Camera.retune`).
IN_PLACE = ("fps", "zones", "full_frame", "resize")


def _ignore_state(stream: StreamConfig, state: CameraState, reason: str) -> None:
    return None


class Camera:
    """A camera thread (state machine + sampler) around a :class:`LiveEdgeReader`."""

    def __init__(self, stream: StreamConfig, ingest: IngestConfig, on_sample: SampleHandler,
                 observer: CameraObserver | None = None, on_state: StateHandler | None = None) -> None:
        self.stream = stream
        self.ingest = ingest
        self._on_sample = on_sample
        self._on_state: StateHandler = on_state or _ignore_state
        self._observer: CameraObserver = observer or NoCameraObserver()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._backoff = Backoff(ingest.backoff_base_s, ingest.backoff_cap_s)
        self._thread = threading.Thread(target=self._run, name=f"camera-{stream.id}", daemon=True)
        self._reader: LiveEdgeReader | None = None
        # The rate it samples at: the stream's fps, lowered by the ingest service's feedback under overload.
        self.pacing = RateController(stream.fps)
        self.state = CameraState.CONNECTING
        self.state_since_s = time.time()
        self.last_error = ""
        self.previous_error = ""  # last_error when the camera last became live, and when (time.time())
        self.previous_error_at_s: float | None = None
        self.failures = 0  # consecutive failed attempts
        self._permanent: tuple[str, int] | None = None  # (reason, times in a row) of a permanent error
        self.reconnects = 0
        self.history: deque[Transition] = deque(maxlen=64)
        self._started_monotonic = time.monotonic()
        self._last_frame_monotonic: float | None = None

    @property
    def id(self) -> str:
        return self.stream.id

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Camera:
        self._observer.track_frame_age(self.id, self.last_frame_age_s)
        self._set_state(CameraState.CONNECTING, "starting")
        self._thread.start()
        return self

    def stop(self, join_timeout_s: float | None = None, reader_join_s: float = 0.0) -> bool:
        """Ask the camera to stop; wait up to ``join_timeout_s`` (default: one open timeout + 2 s).

        ``reader_join_s``: also wait that long for the reader to leave OpenCV (a process about to exit
        must: one that exits while FFmpeg still reads aborts); by default the reader is abandoned."""
        self._stop.set()
        with self._lock:
            reader = self._reader
        if reader is not None:
            reader.abandon(join_timeout_s=reader_join_s)
        timeout = self.ingest.open_timeout_s + 2.0 if join_timeout_s is None else join_timeout_s
        if self._thread.is_alive() and timeout > 0:
            self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped and self.state != CameraState.STOPPED:
            self._set_state(CameraState.STOPPED, "stopped")  # e.g. a failed camera, whose thread ended
        return stopped

    def retune(self, stream: StreamConfig) -> bool:
        """Take a new ``fps`` or new zones (``zones``, ``full_frame``, ``resize``) without reconnecting: the next
        sampled frame is cut by them; False (nothing changed) when more than these differs."""
        same = {k: getattr(self.stream, k) for k in IN_PLACE}
        if stream.model_copy(update=same) != self.stream:
            return False
        self.pacing.set_fps(stream.fps)
        self.stream = stream  # one reference swap: the sampling thread reads either the old or the new whole
        return True

    def last_frame_age_s(self) -> float:
        last = self._last_frame_monotonic
        return time.monotonic() - (last if last is not None else self._started_monotonic)

    def _set_state(self, state: CameraState, reason: str) -> None:
        with self._lock:
            changed = state != self.state or not self.history
            self.state, self.state_since_s = state, time.time()
            self.history.append(Transition(self.state_since_s, state, reason))
        self._observer.set_state(self.id, state.value)
        if changed:
            self._on_state(self.stream, state, reason)
            level = logging.INFO if state in (CameraState.LIVE, CameraState.CONNECTING,
                                              CameraState.STOPPED) else logging.WARNING
            log.log(level, "camera %s (%s): %s - %s", self.id, self.stream.redacted_url(), state.value,
                    reason)

    # -- the camera thread -------------------------------------------------------------------------

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self.reconnects += 1
                self._observer.reconnected(self.id)
            first = False
            self._set_state(CameraState.CONNECTING, "opening the stream")
            failure = self._connect_and_sample()
            if self._stop.is_set():
                break
            if failure is None:
                continue  # stalled: reopen at once, the stall already waited stall_timeout_s
            reason, permanent = failure
            self.failures += 1
            self.last_error = reason
            if self._gives_up(reason, permanent):
                self._set_state(CameraState.FAILED, f"{reason}; gave up after the same error {self.failures} "
                                "times in a row: retrying cannot help (fix the source or the config, then reload)")
                return
            delay = self._backoff.next_delay_s()
            self._set_state(CameraState.BACKING_OFF, f"{reason}; retry in {delay:.1f} s")
            self._stop.wait(delay)
        self._set_state(CameraState.STOPPED, "stopped")

    def _gives_up(self, reason: str, permanent: bool) -> bool:
        """Count a permanent error that repeats; any other failure resets the count (retried for ever)."""
        if not permanent:
            self._permanent = None
            return False
        times = self._permanent[1] + 1 if self._permanent and self._permanent[0] == reason else 1
        self._permanent = (reason, times)
        return bool(self.ingest.max_failures) and times >= self.ingest.max_failures

    def _connect_and_sample(self) -> tuple[str, bool] | None:
        """Open and sample until the stream ends: (failure reason, permanent), or None after a stall."""
        source = VideoSource(SourceOptions.from_config(self.stream, self.ingest))
        try:
            source.open()
        except SourceError as exc:
            return f"open failed: {exc.reason}", exc.permanent
        reader = LiveEdgeReader(source, self.id, self._decoded)
        with self._lock:
            self._reader = reader
        try:
            reader.start()
            return self._sample(reader)
        finally:
            # Never join a reader that may be stuck inside OpenCV: it closes its own capture.
            reader.abandon()
            with self._lock:
                self._reader = None

    def _decoded(self, frame: RawFrame) -> None:
        self._last_frame_monotonic = time.monotonic()
        self._observer.frame_decoded(self.id, frame.decode_latency_s)

    def _sample(self, reader: LiveEdgeReader) -> tuple[str, bool] | None:
        stall_s = self.ingest.stall_timeout_s
        next_tick = time.monotonic()
        last_index = -1
        while not self._stop.is_set():
            if self._stop.wait(max(0.0, next_tick - time.monotonic())):
                break
            frame = reader.wait_newer(last_index, timeout_s=min(0.1, stall_s / 4))
            if frame is None:
                since = reader.last_frame_monotonic or reader.started_monotonic
                silent_s = time.monotonic() - since
                if reader.ended and silent_s < min(stall_s, self.ingest.read_timeout_s):
                    return reader.end_reason or "the stream ended", reader.end_permanent
                if reader.ended or silent_s > stall_s:
                    # OpenCV's read timeout may fire first (when read_timeout_s < stall_timeout_s):
                    # that is a stall too, not a lost connection.
                    self.last_error = f"no frame for {silent_s:.1f} s"
                    self._set_state(CameraState.STALLED, f"no frame for {silent_s:.1f} s; reopening")
                    return None
                continue
            if self.state != CameraState.LIVE:
                self.failures, self._permanent = 0, None
                if self.last_error:  # the error is history now: /readyz shows it as previous_error
                    self.previous_error, self.previous_error_at_s, self.last_error = self.last_error, time.time(), ""
                self._backoff.reset()
                self._set_state(CameraState.LIVE, f"receiving {reader_size(frame)} frames")
            last_index = frame.index
            self._observer.frame_sampled(self.id)
            self._on_sample(self.stream, frame)
            # Keep the schedule (no drift), but never burst to catch up after a slow frame.
            period_s = 1.0 / self.pacing.rate_fps
            next_tick = max(next_tick + period_s, time.monotonic() - period_s / 2)
        return None


def reader_size(frame: RawFrame) -> str:
    h, w = frame.bgr.shape[:2]
    return f"{w}x{h}"
