"""Cameras whose server accepts and never answers must not hold back any other camera's reconnect."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline.core.config import validate_config
from pipeline.ingest.camera import CameraState
from pipeline.ops.ingest_service import IngestService
from tests.fixtures.services import RedisServer, RtspServer
from tests.pipeline.ops.ingest_helpers import wait_until


class HungServer:
    """Accepts TCP connections on loopback and never sends a byte (a wedged camera)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        # shutdown wakes the blocked accept (close alone may not); join before closing what it accepted, or a
        # connection accepted meanwhile would be left open (an unraisable ResourceWarning in a later test).
        with contextlib.suppress(OSError):  # not connected: Linux still wakes accept
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for c in self.conns:
            c.close()


@pytest.fixture(params=[5, 20], ids=["5-hung", "20-hung"])
def hung(request: pytest.FixtureRequest) -> Iterator[list[HungServer]]:
    # 20 hung beside 5 good is the 200-camera site's ratio (20 of 200); hung cameras cost no decoding,
    # so it fits this machine. Each probe waits in its own camera's thread, holding no shared lock.
    servers = [HungServer() for _ in range(request.param)]
    yield servers
    for s in servers:
        s.close()


def test_good_cameras_recover_within_15_s_beside_hung_ones(hung: list[HungServer], redis_server: RedisServer,
                                                           rtsp_factory: Callable[..., RtspServer]) -> None:
    rtsp = rtsp_factory()
    good = [f"hung-good-{i}" for i in range(5)]
    streams = [{"id": stream_id, "url": rtsp.url("bikes"), "fps": 2} for stream_id in good]
    streams += [{"id": f"hung-bad-{i}", "url": f"rtsp://127.0.0.1:{h.port}/cam", "fps": 2} for i, h in enumerate(hung)]
    cfg = validate_config({"streams": streams, "redis": {"urls": [redis_server.url()]}, "metrics": {"port": 0},
                           # open_timeout_s stays at its default, 10 s: what a hung camera would hold others for.
                           "ingest": {"read_timeout_s": 1.5, "stall_timeout_s": 1.5, "backoff_base_s": 0.2,
                                      "backoff_cap_s": 1.0}}, environ={})
    with IngestService(cfg) as worker:
        wait_until(lambda: all(worker.camera_state(s) == CameraState.LIVE for s in good), 30, "good cameras live")
        rtsp.kill()  # a 3 s outage of the good cameras' server
        time.sleep(3)
        rtsp.start()
        t0 = time.monotonic()
        wait_until(lambda: all(worker.camera_state(s) == CameraState.LIVE
                               and worker.cameras[s].last_frame_age_s() < time.monotonic() - t0 for s in good),
                   15, "every good camera live again with a new frame")
        recovered_s = time.monotonic() - t0
        bad = {c["id"]: c for c in worker.status()["cameras"] if c["id"].startswith("hung-bad")}
    assert all("no answer from 127.0.0.1" in c["last_error"] for c in bad.values()), bad
    assert recovered_s < 15, recovered_s
