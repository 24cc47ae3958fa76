"""Video sources on the real shared videos, broken files, and a real RTSP server on loopback."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import SourceError
from pipeline.ingest.source import (
    CAPTURE_OPTIONS_ENV,
    QUICK_ANALYZE_US,
    LiveEdgeReader,
    SourceOptions,
    VideoSource,
    capture_options,
)
from tests.fixtures import media
from tests.fixtures.services import RtspServer


def test_capture_options() -> None:
    assert capture_options(SourceOptions(url="rtsp://h/x")) == "rtsp_transport;tcp"
    assert capture_options(SourceOptions(url="rtsps://h/x", transport="udp", keyframes_only=True)) == (
        "rtsp_transport;udp|avdiscard;nonkey")
    assert capture_options(SourceOptions(url="/videos/a.mp4", keyframes_only=True)) == "avdiscard;nonkey"
    assert capture_options(SourceOptions(url="/videos/a.mp4")) == ""
    assert capture_options(SourceOptions(url="/dev/video0")) == "input_format;video4linux2"


def test_the_quick_analysis_is_for_rtsp_only() -> None:
    assert capture_options(SourceOptions(url="rtsp://h/x"), quick=True) == (
        f"rtsp_transport;tcp|analyzeduration;{QUICK_ANALYZE_US}")
    assert capture_options(SourceOptions(url="/videos/a.mp4"), quick=True) == ""


def test_rtsp_cameras_open_in_a_fraction_of_ffmpegs_default_analysis(rtsp_server: RtspServer) -> None:
    # OpenCV opens one capture at a time, so each camera's open holds up every other camera's (re)connect.
    # FFmpeg's default analysis took about 1 s an open here (5 s for these 5); the quick one about 0.2 s.
    t0 = time.monotonic()
    for _ in range(5):
        with VideoSource(SourceOptions(url=rtsp_server.url("bikes"))) as src:
            frame = src.read()
            assert frame is not None and frame.bgr.shape == (272, 640, 3)
    assert time.monotonic() - t0 < 3.0


def test_open_restores_the_capture_options_variable(video_dir: Path) -> None:
    before = os.environ.get(CAPTURE_OPTIONS_ENV)
    with VideoSource(SourceOptions(url=str(video_dir / "bikes.mp4"), keyframes_only=True)):
        assert os.environ.get(CAPTURE_OPTIONS_ENV) == before


def test_local_file_is_paced_at_native_fps(video_dir: Path) -> None:
    with VideoSource(SourceOptions(url=str(video_dir / "bikes.mp4"))) as src:
        assert (src.width, src.height, src.fps, src.frame_count) == (640, 272, 25.0, 250)
        t0 = time.monotonic()
        frames = [src.read() for _ in range(26)]
        elapsed = time.monotonic() - t0
    assert all(f is not None for f in frames)
    assert 0.9 < elapsed < 1.4, elapsed  # 25 frame intervals at 25 fps = 1 s


def test_looping_file_continues_timestamps_and_restarts_pixels(video_dir: Path) -> None:
    path = video_dir / "bikes.mp4"
    ref = media.decode_all(path)
    with VideoSource(SourceOptions(url=str(path), loop=True, paced=False)) as src:
        frames = []
        for _ in range(len(ref) + 5):
            frame = src.read()
            assert frame is not None
            frames.append(frame)
    assert [f.index for f in frames] == list(range(len(ref) + 5))
    pts = [f.pts_s for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[len(ref)] == pytest.approx(10.0, abs=0.05)  # the second pass starts after 250 frames
    np.testing.assert_array_equal(frames[len(ref)].bgr, ref[0])
    np.testing.assert_array_equal(frames[len(ref) + 4].bgr, ref[4])


def test_non_looping_file_ends_with_a_reason(video_dir: Path) -> None:
    with VideoSource(SourceOptions(url=str(video_dir / "bikes.mp4"), paced=False)) as src:
        for _ in range(250):
            assert src.read() is not None
        with pytest.raises(SourceError, match="end of file"):
            src.read()


def test_keyframes_only_decodes_just_the_keyframes(video_dir: Path) -> None:
    path = video_dir / "slideshow.mp4"  # a keyframe every 25 frames
    ref = media.decode_all(path)
    got = []
    with (VideoSource(SourceOptions(url=str(path), keyframes_only=True, paced=False)) as src,
          pytest.raises(SourceError, match="end of file")):
        while True:
            frame = src.read()
            assert frame is not None
            got.append(frame)
    assert len(got) == 10
    for i, frame in enumerate(got):
        np.testing.assert_array_equal(frame.bgr, ref[25 * i])
        assert frame.pts_s == pytest.approx(i, abs=0.05)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("broken")
    bikes = video_dir / "bikes.mp4"
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "missing": d / "missing.mp4",
        "empty": empty,
        "text": media.not_a_video(d / "notes.mp4"),
        "truncated": media.truncated_mp4(bikes, d / "truncated.mp4"),
        "truncated_faststart": media.truncated_faststart_mp4(bikes, d / "truncated_fs.mp4"),
        "corrupted": media.corrupted_h264(bikes, d / "corrupted.h264"),
    }


@pytest.mark.parametrize(("name", "reason"), [
    ("missing", "file does not exist"),
    ("empty", "file is empty"),
    ("text", "not a video file"),
    ("truncated", "truncated or corrupted"),
])
def test_unopenable_files_say_why(broken: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(SourceError, match=reason) as err:
        VideoSource(SourceOptions(url=str(broken[name]))).open()
    assert reason in err.value.reason


def test_truncated_file_that_opens_fails_when_frames_run_out(broken: dict[str, Path]) -> None:
    with (VideoSource(SourceOptions(url=str(broken["truncated_faststart"]), loop=True, paced=False)) as src,
          pytest.raises(SourceError, match=r"ended after \d+ of 250 frames: truncated or corrupted")):
        for _ in range(1000):
            src.read()


def test_corrupted_h264_stops_with_a_reason_and_no_hang(broken: dict[str, Path]) -> None:
    t0 = time.monotonic()
    n = 0
    with (VideoSource(SourceOptions(url=str(broken["corrupted"]), paced=False)) as src,
          pytest.raises(SourceError, match="end of file")):
        for _ in range(1000):
            src.read()
            n += 1
    assert n < 250  # it did not decode the whole clip
    assert time.monotonic() - t0 < 10


# -- RTSP -------------------------------------------------------------------------------------------


def _rtsp(url: str, **kw: float) -> SourceOptions:
    return SourceOptions(url=url, open_timeout_s=kw.get("open_timeout_s", 3.0), read_timeout_s=3.0)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_match_the_file(rtsp_server: RtspServer, video_dir: Path, transport: str) -> None:
    ref = {f.tobytes() for f in media.decode_all(video_dir / "bikes.mp4")}
    opts = SourceOptions(url=rtsp_server.url("bikes"), transport=transport,  # type: ignore[arg-type]
                         open_timeout_s=5, read_timeout_s=5)
    with VideoSource(opts) as src:
        assert (src.width, src.height) == (640, 272)
        frames = [src.read() for _ in range(10)]
    for f in frames:
        assert f is not None
        assert f.bgr.tobytes() in ref  # bit-exact: the same H.264 bitstream, the same decoder


def test_live_edge_reader_hands_out_only_the_newest_frame(rtsp_server: RtspServer) -> None:
    source = VideoSource(_rtsp(rtsp_server.url("bikes")))
    source.open()
    with LiveEdgeReader(source, "t") as reader:
        first = reader.wait_newer(-1, timeout_s=5)
        assert first is not None
        time.sleep(1.0)  # a slow consumer: ~25 frames arrive meanwhile
        latest = reader.wait_newer(first.index, timeout_s=1)
        assert latest is not None
        assert latest.index >= first.index + 15  # it skipped to the live edge
        assert reader.wait_newer(latest.index, timeout_s=0.5) is not None  # and keeps going
    assert reader.abandon(join_timeout_s=5)




def test_rtsp_never_answering_is_bounded(silent_port: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no answer from 127\.0\.0\.1"):
        VideoSource(_rtsp(f"rtsp://127.0.0.1:{silent_port}/cam", open_timeout_s=1.0)).open()
    assert time.monotonic() - t0 < 1.0 + 1.0 + 1.5  # open timeout + probe timeout + slack


def test_rtsp_refused(silent_port: int) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="connection refused"):
        VideoSource(_rtsp(f"rtsp://127.0.0.1:{port}/cam")).open()


def test_rtsp_wrong_path(rtsp_server: RtspServer) -> None:
    with pytest.raises(SourceError, match="RTSP 404"):
        VideoSource(_rtsp(rtsp_server.url("no-such-camera"))).open()


@pytest.mark.parametrize("method", ["basic", "digest"])
def test_rtsp_credentials(rtsp_factory: Callable[..., RtspServer], method: str) -> None:
    server = rtsp_factory(user="viewer", password="Pa55-word", auth=method)
    with VideoSource(_rtsp(server.url("bikes", "viewer", "Pa55-word"))) as src:
        assert src.read() is not None
    with pytest.raises(SourceError, match="credentials rejected") as err:
        VideoSource(_rtsp(server.url("bikes", "viewer", "not-the-password"))).open()
    assert "not-the-password" not in str(err.value) and "viewer:***@" in str(err.value)
    with pytest.raises(SourceError, match="requires credentials"):
        VideoSource(_rtsp(server.url("bikes"))).open()
