"""The per-camera state machine against real files and a real RTSP server that dies and freezes."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.core.backoff import Backoff
from pipeline.core.config import IngestConfig, StreamConfig
from pipeline.ingest.camera import Camera, CameraState
from pipeline.ingest.source import RawFrame
from pipeline.ops.metrics import IngestMetrics
from tests.fixtures.services import RtspServer

FAST = IngestConfig(open_timeout_s=2.0, read_timeout_s=1.0, stall_timeout_s=1.5, backoff_base_s=0.2,
                    backoff_cap_s=1.0)


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 4.0, random.Random(3))
    delays = [b.next_delay_s() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for d, c in zip(delays, ceilings, strict=True):
        assert c * 0.5 <= d <= c
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not lockstep
    b.reset()
    assert b.next_delay_s() <= 0.5


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        Backoff(2.0, 1.0)


class Collector:
    def __init__(self) -> None:
        self.frames: list[tuple[float, RawFrame]] = []
        self.lock = threading.Lock()

    def __call__(self, _stream: StreamConfig, frame: RawFrame) -> None:
        with self.lock:
            self.frames.append((time.monotonic(), frame))

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


@contextmanager
def running(stream: StreamConfig, ingest: IngestConfig = FAST) -> Iterator[tuple[Camera, Collector]]:
    sink = Collector()
    metrics = IngestMetrics()
    metrics.set_streams([stream.id])
    cam = Camera(stream, ingest, sink, metrics).start()
    try:
        yield cam, sink
    finally:
        assert cam.stop(join_timeout_s=10)
        assert cam.state == CameraState.STOPPED


def wait_for(cam: Camera, state: CameraState, timeout_s: float) -> float:
    """Seconds until the camera entered ``state`` (from its transition history)."""
    t0 = time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hits = [t.at_s for t in list(cam.history) if t.state == state and t.at_s >= t0]
        if hits:
            return hits[0] - t0
        time.sleep(0.02)
    raise AssertionError(f"camera {cam.id} did not become {state} within {timeout_s} s; history: "
                         f"{[(t.state.value, t.reason) for t in cam.history]}")


def test_file_camera_goes_live_and_samples_at_target_fps(video_dir: Path) -> None:
    stream = StreamConfig(id="file", url=str(video_dir / "bikes.mp4"), fps=5, loop=True)
    with running(stream) as (cam, sink):
        wait_for(cam, CameraState.LIVE, 5)
        time.sleep(3)
        frames = list(sink.frames)
    times = [t for t, _ in frames]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 4.5 < rate < 5.5, rate
    indexes = [f.index for _, f in frames]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    assert all(4 <= b - a <= 6 for a, b in itertools.pairwise(indexes))  # every 5th of 25 fps


def test_missing_file_backs_off_then_fails_after_max_failures(tmp_path: Path) -> None:
    stream = StreamConfig(id="gone", url=str(tmp_path / "gone.mp4"))
    ingest = FAST.model_copy(update={"max_failures": 3})
    with running(stream, ingest) as (cam, _sink):
        wait_for(cam, CameraState.BACKING_OFF, 3)
        assert "file does not exist" in cam.last_error
        wait_for(cam, CameraState.FAILED, 5)
        assert cam.failures == 3
        time.sleep(0.3)
        assert cam.state == CameraState.FAILED  # it stays failed, no busy retrying


def test_a_file_that_is_not_a_video_fails_for_good_with_the_reason(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video, whatever its name says\n" * 100)
    stream = StreamConfig(id="junk", url=str(junk))
    with running(stream, FAST.model_copy(update={"max_failures": 3})) as (cam, _sink):
        wait_for(cam, CameraState.FAILED, 10)
        assert cam.failures == 3 and "not a video file" in cam.last_error
        assert "gave up after the same error 3 times in a row" in cam.history[-1].reason


def test_transient_errors_are_retried_for_ever(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused, a transient error
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stream = StreamConfig(id="down", url=f"rtsp://127.0.0.1:{port}/cam")
    with running(stream, FAST.model_copy(update={"max_failures": 2, "backoff_cap_s": 0.3})) as (cam, _sink):
        deadline = time.monotonic() + 5
        while cam.failures < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cam.failures >= 6 and cam.state != CameraState.FAILED, (cam.failures, cam.state)
        assert "connection refused" in cam.last_error


def test_killed_server_backs_off_and_comes_back_live(rtsp_factory: Callable[..., RtspServer]) -> None:
    server = rtsp_factory()
    stream = StreamConfig(id="cam", url=server.url("bikes"), fps=5)
    with running(stream) as (cam, sink):
        wait_for(cam, CameraState.LIVE, 10)
        server.kill()
        took = wait_for(cam, CameraState.BACKING_OFF, FAST.read_timeout_s + 1.0)
        assert took <= FAST.read_timeout_s + 0.5
        time.sleep(2.0)  # a few failed reconnects while it is down
        assert cam.state in (CameraState.BACKING_OFF, CameraState.CONNECTING)
        assert "connection refused" in cam.last_error
        server.start()
        # Live again within one backoff cap (plus opening, plus the first frame).
        wait_for(cam, CameraState.LIVE, FAST.backoff_cap_s + FAST.open_timeout_s + 1.0)
        # Live again: the error is history, not the camera's current state.
        assert cam.last_error == "" and "connection refused" in cam.previous_error
        assert cam.previous_error_at_s is not None and cam.previous_error_at_s <= time.time()
        before = sink.count()
        time.sleep(1.0)
        assert sink.count() > before
        assert cam.reconnects >= 2


@pytest.mark.parametrize(("read_timeout_s", "stall_timeout_s"), [
    (4.0, 1.0),  # the camera's own stall detection fires long before OpenCV's read timeout
    (1.0, 1.5),  # OpenCV's read timeout fires first: reported as a stall all the same
])
def test_frozen_server_is_stalled_then_recovers(rtsp_factory: Callable[..., RtspServer],
                                                read_timeout_s: float, stall_timeout_s: float) -> None:
    server = rtsp_factory()
    stream = StreamConfig(id="cam", url=server.url("bikes"), fps=5)
    ingest = FAST.model_copy(update={"read_timeout_s": read_timeout_s, "stall_timeout_s": stall_timeout_s})
    with running(stream, ingest) as (cam, sink):
        wait_for(cam, CameraState.LIVE, 10)
        server.pause()
        try:
            took = wait_for(cam, CameraState.STALLED, stall_timeout_s + 1.5)
            assert took <= stall_timeout_s + 0.5
            time.sleep(2.0)
            assert cam.state != CameraState.LIVE
        finally:
            server.resume()
        # Recovers by reopening: the connection that was open during the freeze is never reused.
        wait_for(cam, CameraState.LIVE, ingest.backoff_cap_s + 2 * ingest.open_timeout_s + 2.0)
        before = sink.count()
        time.sleep(1.0)
        assert sink.count() > before
