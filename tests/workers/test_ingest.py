"""The ingest worker end to end: real RTSP server, real redis-server, real files, loopback only."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pipeline.bus.wire import FrameMessage, decode_frame
from pipeline.cli import app
from pipeline.core.config import VigilConfig, validate_config
from pipeline.core.errors import ConfigError
from pipeline.core.keys import frames_key
from pipeline.ingest.camera import CameraState
from pipeline.ingest.shard import ordinal_from_hostname, owned_streams, parse_shard, shard_of
from pipeline.ops.ingest_service import IngestService
from tests.fixtures import media
from tests.fixtures.services import RedisServer, RtspServer, wait_for

FAST = {"open_timeout_s": 1.5, "read_timeout_s": 1.5, "stall_timeout_s": 1.5, "backoff_base_s": 0.2,
        "backoff_cap_s": 1.0}
UNITS = ("_total", "_seconds", "_seconds_bucket", "_seconds_count", "_seconds_sum", "_created", "_up",
         "_state")


def make_config(streams: list[dict[str, Any]], redis_url: str, **extra: Any) -> VigilConfig:
    doc = {"streams": streams, "redis": {"urls": [redis_url], "socket_timeout_s": 1.0, **extra.get("redis", {})},
           "ingest": {**FAST, **extra.get("ingest", {})}, "metrics": {"port": 0}}
    return validate_config(doc)


def read_stream(server: RedisServer, sid: str) -> list[FrameMessage]:
    return [decode_frame(f) for _, f in server.client().xrange(frames_key(sid))]


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    assert wait_for(cond, timeout_s, interval_s=0.05), f"timed out after {timeout_s} s waiting for {what}"


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


# -- frames ------------------------------------------------------------------------------------------


def test_rtsp_frames_arrive_at_fps_in_order_and_match_a_direct_decode(
        rtsp_server: RtspServer, redis_server: RedisServer, video_dir: Path) -> None:
    files = {"w1-slideshow": video_dir / "slideshow.mp4", "w1-bikes": video_dir / "bikes.mp4"}
    for sid in files:
        redis_server.client().delete(frames_key(sid))
    cfg = make_config([{"id": "w1-slideshow", "url": rtsp_server.url("slideshow"), "fps": 5},
                       {"id": "w1-bikes", "url": rtsp_server.url("bikes"), "fps": 5}], redis_server.url())
    with IngestService(cfg) as worker:
        wait_until(lambda: all(worker.camera_state(s) == CameraState.LIVE for s in files), 15, "live")
        time.sleep(4.0)
    for sid, path in files.items():
        msgs = read_stream(redis_server, sid)
        assert len(msgs) >= 15, sid
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        ts = [m.capture_ts_ns for m in msgs]
        assert all(b > a for a, b in itertools.pairwise(ts))
        rate = (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9)
        assert 4.0 < rate < 6.0, (sid, rate)
        assert abs(ts[-1] / 1e9 - time.time()) < 10
        reference = {f.tobytes(): i for i, f in enumerate(media.model_frames(path))}
        matched = []
        for m in msgs:
            assert (m.height, m.width, m.pixels.dtype.name) == (224, 224, "uint8")
            assert (m.source_height, m.source_width) == ((480, 640) if "slide" in sid else (272, 640))
            assert m.pixels.tobytes() in reference, f"{sid} frame {m.seq} matches no decoded frame"
            matched.append(reference[m.pixels.tobytes()])
        if sid == "w1-bikes":  # moving footage: the matched frame numbers advance (mod the loop)
            # (The server sends about a second of frames in a burst on connect; the live-edge reader
            # skips to the newest, so the first step may be large.)
            steps = [(b - a) % 250 for a, b in itertools.pairwise(matched)]
            assert all(1 <= s <= 10 for s in steps[1:]) and 1 <= steps[0] <= 40, steps


@pytest.fixture(scope="module")
def broken_media(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    bikes = video_dir / "bikes.mp4"
    return {"notvideo": media.not_a_video(d / "notes.mp4"),
            "truncated": media.truncated_faststart_mp4(bikes, d / "truncated.mp4"),
            "corrupted": media.corrupted_h264(bikes, d / "corrupted.h264")}




def test_broken_sources_report_why_while_others_keep_flowing(
        rtsp_factory: Callable[..., RtspServer], redis_server: RedisServer, video_dir: Path, *,
        broken_media: dict[str, Path], silent_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rtsp = rtsp_factory(user="viewer", password="Right-Pw-1")
    streams = [
        {"id": "w2-good", "url": rtsp.url("bikes", "viewer", "Right-Pw-1"), "fps": 5},
        {"id": "w2-file", "url": str(video_dir / "slideshow.mp4"), "fps": 5, "loop": True},
        {"id": "w2-silent", "url": f"rtsp://127.0.0.1:{silent_port}/cam"},
        {"id": "w2-wrongpath", "url": rtsp.url("nope", "viewer", "Right-Pw-1")},
        {"id": "w2-badcreds", "url": rtsp.url("bikes", "viewer", "Wrong-Pw-2")},
        {"id": "w2-notvideo", "url": str(broken_media["notvideo"])},
        {"id": "w2-truncated", "url": str(broken_media["truncated"]), "loop": True},
        {"id": "w2-corrupted", "url": str(broken_media["corrupted"])},
    ]
    expected = {"w2-silent": "no answer from 127.0.0.1", "w2-wrongpath": "RTSP 404",
                "w2-badcreds": "credentials rejected", "w2-notvideo": "not a video file",
                "w2-truncated": "truncated or corrupted", "w2-corrupted": "end of file"}
    for s in streams:
        redis_server.client().delete(frames_key(s["id"]))
    cfg = make_config(streams, redis_server.url())
    with IngestService(cfg) as worker:
        wait_until(lambda: all(worker.cameras[s].last_error for s in expected), 25, "every broken camera")
        counts = {s: len(read_stream(redis_server, s)) for s in ("w2-good", "w2-file")}
        time.sleep(2.0)
        for sid, n in counts.items():  # the good cameras kept flowing meanwhile
            assert len(read_stream(redis_server, sid)) >= n + 6, sid
            assert worker.camera_state(sid) == CameraState.LIVE
        status = {c["id"]: c for c in worker.status()["cameras"]}
    for sid, reason in expected.items():
        assert reason in status[sid]["last_error"], (sid, status[sid])
        assert status[sid]["state"] in ("backing_off", "connecting", "live"), status[sid]
        logged = [r.getMessage() for r in caplog.records if f"camera {sid} " in r.getMessage()]
        assert any(reason in line and r"backing_off" in line for line in logged), (sid, logged)
    assert "Wrong-Pw-2" not in caplog.text and "Right-Pw-1" not in caplog.text
    assert "Wrong-Pw-2" not in json.dumps(status)


def test_redis_down_for_10_s_drops_counted_and_resumes(
        redis_factory: Callable[..., RedisServer], video_dir: Path) -> None:
    server = redis_factory()
    cfg = make_config([{"id": "w3", "url": str(video_dir / "bikes.mp4"), "fps": 5, "loop": True}],
                      server.url())
    with IngestService(cfg) as worker:
        wait_until(lambda: len(read_stream(server, "w3")) >= 5, 10, "first frames")
        last_seq = read_stream(server, "w3")[-1].seq
        server.stop()
        time.sleep(10.0)
        assert worker.camera_state("w3") == CameraState.LIVE  # kept reading all along
        code, body = http_get(worker.http_port, "/readyz")
        assert code == 503 and json.loads(body)["bus"][0]["up"] is False
        _, metrics = http_get(worker.http_port, "/metrics")
        dropped = sum(s.value for f in text_string_to_metric_families(metrics)
                      if f.name == "vigil_ingest_dropped_frames" for s in f.samples
                      if s.name.endswith("_total") and s.labels["reason"] in ("bus_down", "bus_error"))
        assert 35 <= dropped <= 60, dropped  # ~10 s at 5 fps
        server.start()
        wait_until(lambda: len(read_stream(server, "w3")) >= 3, 5, "publishing to resume")
        assert http_get(worker.http_port, "/readyz")[0] == 200
    resumed = read_stream(server, "w3")
    assert resumed[0].seq > last_seq + 35  # the gap in seq shows the dropped frames


def test_eviction_by_maxlen_is_counted(redis_factory: Callable[..., RedisServer], video_dir: Path) -> None:
    server = redis_factory(extra_args=["--stream-node-max-entries", "5"])
    cfg = make_config([{"id": "w4", "url": str(video_dir / "bikes.mp4"), "fps": 25, "loop": True}],
                      server.url(), redis={"maxlen": 10})
    with IngestService(cfg) as worker:
        worker.eviction_check_s = 0.3
        wait_until(lambda: server.client().xinfo_stream(frames_key("w4"))["entries-added"] > 40
                   if server.client().exists(frames_key("w4")) else False, 10, "40 frames")
        time.sleep(0.5)
        _, metrics = http_get(worker.http_port, "/metrics")
    evicted = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.name == "vigil_ingest_dropped_frames_total" and s.labels["reason"] == "evicted"]
    assert evicted and evicted[0] >= 20
    assert server.client().xlen(frames_key("w4")) < 20


# -- metrics, health, reload ---------------------------------------------------------------------------


def scrape(port: int) -> dict[str, list[Any]]:
    _, text = http_get(port, "/metrics")
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_health_and_reload_touch_only_changed_cameras(redis_server: RedisServer, video_dir: Path) -> None:
    file = str(video_dir / "bikes.mp4")
    keep = {"id": "w5-keep", "url": file, "fps": 5, "loop": True}
    gone = {"id": "w5-gone", "url": file, "fps": 5, "loop": True}
    cfg = make_config([keep, gone], redis_server.url())
    with IngestService(cfg) as worker:
        port = worker.http_port
        wait_until(lambda: worker.camera_state("w5-gone") == CameraState.LIVE
                   and worker.camera_state("w5-keep") == CameraState.LIVE, 10, "live")
        time.sleep(0.5)
        assert http_get(port, "/healthz") == (200, "ok\n")
        code, body = http_get(port, "/readyz")
        assert code == 200 and {c["id"]: c["state"] for c in json.loads(body)["cameras"]} == {
            "w5-keep": "live", "w5-gone": "live"}
        samples = scrape(port)
        for name, series in samples.items():
            assert name.startswith("vigil_ingest_"), name
            for s in series:
                assert s.name.endswith(UNITS), s.name
                assert s.labels.get("stream", "w5-keep") in ("w5-keep", "w5-gone")
        kept_cam = worker.cameras["w5-keep"]
        added = {"id": "w5-added", "url": str(video_dir / "slideshow.mp4"), "fps": 5, "loop": True}
        worker.reload(make_config([keep, added], redis_server.url()))
        assert worker.cameras["w5-keep"] is kept_cam and kept_cam.reconnects == 0
        assert set(worker.cameras) == {"w5-keep", "w5-added"}
        wait_until(lambda: worker.camera_state("w5-added") == CameraState.LIVE, 10, "added camera")
        streams = {s.labels.get("stream") for series in scrape(port).values() for s in series}
        assert "w5-gone" not in streams and {"w5-keep", "w5-added"} <= streams
        assert http_get(port, "/nope")[0] == 404


def test_shards_split_cameras_deterministically() -> None:
    ids = [f"cam-{i}" for i in range(200)]
    for n in (1, 2, 3, 5):
        owners = [[i for i in range(n) if shard_of(c, n) == i] for c in ids]
        assert all(len(o) == 1 for o in owners)  # exactly one owner each
        if n > 1:
            assert min(sum(1 for o in owners if o == [i]) for i in range(n)) > 200 / n / 2
    cfg = validate_config({"streams": [{"id": c, "url": "/x.mp4"} for c in ids[:20]]})
    parts = [{s.id for s in owned_streams(cfg, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(ids[:20]) and sum(map(len, parts)) == 20
    # Pinned values: the split must not change between processes or releases (Python's hash() is salted).
    assert [shard_of(f"cam-{i}", 4) for i in range(8)] == [0, 0, 1, 1, 2, 1, 1, 2]


def test_parse_shard_and_statefulset_ordinal() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("auto/8", hostname="vigil-ingest-5") == (5, 8)
    assert ordinal_from_hostname("vigil-ingest-12.vigil.svc.cluster.local") == 12
    for bad in ("4/4", "x/2", "1/0", "auto/3"):
        with pytest.raises(ConfigError):
            parse_shard(bad, hostname="no-ordinal")


# -- the process: signals, secrets ---------------------------------------------------------------------


class Worker:
    """`vigil ingest` as a child process, its output collected in a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ingest", "--config", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "VIGIL_LOG_LEVEL": "DEBUG"})
        wait_until(lambda: "http on port" in self.output() or self.proc.poll() is not None, 20, "worker start")
        line = next(ln for ln in self.output().splitlines() if "vigil ingest: http on port" in ln)
        self.port = int(line.rsplit(" ", 1)[1])

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def readyz(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(http_get(self.port, "/readyz")[1])
        return doc

    def cameras(self) -> dict[str, dict[str, Any]]:
        return {c["id"]: c for c in self.readyz()["cameras"]}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def test_sighup_reload_sigterm_exit_and_no_credentials_anywhere(
        tmp_path: Path, rtsp_factory: Callable[..., RtspServer],
        redis_factory: Callable[..., RedisServer], video_dir: Path) -> None:
    cam_pw, bad_pw, redis_pw = "CamPass-9931", "BadPass-7710", "RedisPass-4242"
    rtsp = rtsp_factory(user="viewer", password=cam_pw, auth="digest")
    redis = redis_factory(password=redis_pw, user="ingest")
    file = str(video_dir / "slideshow.mp4")
    streams = [{"id": "p-auth", "url": rtsp.url("bikes", "viewer", cam_pw), "fps": 5},
               {"id": "p-bad", "url": rtsp.url("bikes", "viewer", bad_pw), "fps": 5},
               {"id": "p-file", "url": file, "fps": 5, "loop": True}]
    config = tmp_path / "vigil.yaml"
    doc = {"streams": streams, "redis": {"urls": [redis.url()]}, "ingest": FAST, "metrics": {"port": 0}}
    config.write_text(yaml.safe_dump(doc))
    worker = Worker(config, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.cameras()["p-auth"]["state"] == "live"
                   and "credentials rejected" in worker.cameras()["p-bad"]["last_error"], 20, "cameras")
        doc["streams"] = [streams[0], streams[1], {**streams[2], "id": "p-added"}]
        config.write_text(yaml.safe_dump(doc))
        worker.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: set(worker.cameras()) == {"p-auth", "p-bad", "p-added"}, 10, "reload")
        wait_until(lambda: worker.cameras()["p-added"]["state"] == "live", 10, "added camera live")
        assert worker.cameras()["p-auth"]["reconnects"] == 0  # untouched by the reload
        readyz = json.dumps(worker.readyz())
        metrics = http_get(worker.port, "/metrics")[1]
        assert redis.client().xlen(frames_key("p-auth")) > 0
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(15) == 0
    finally:
        worker.close()
    logs = worker.output()
    assert "config reloaded" in logs and "credentials rejected" in logs and "viewer:***@" in logs
    for secret in (cam_pw, bad_pw, redis_pw):
        for where, text in (("logs", logs), ("readyz", readyz), ("metrics", metrics)):
            assert secret not in text, f"{secret} leaked into {where}"


def test_bench_ingest_reports_figures(redis_server: RedisServer, video_dir: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "ingest", str(video_dir / "bikes.mp4"), "--seconds", "2",
                                      "--redis-url", redis_server.url(), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    full, keyframes = doc["runs"][1], doc["runs"][2]
    # At least one whole pass over the 10 s clip: 250 frames decoded, 50 sampled at 5 fps.
    assert doc["runs"][0]["decoded_frames"] == full["decoded_frames"] == 250
    assert full["published_frames"] == 50
    assert keyframes["decoded_frames"] < full["decoded_frames"]
    assert doc["vigil_vs_ffmpeg"] > 0 and 0 < doc["keyframes_only_cpu_saving"] < 1
