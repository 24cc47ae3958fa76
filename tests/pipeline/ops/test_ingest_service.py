"""The ingest service end to end: real RTSP server, real redis-server, real files, loopback only."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pipeline.core.config import validate_config
from pipeline.core.keys import STANDALONE, camera_status_key, frames_key, preview_key, sink_group
from pipeline.ingest.camera import CameraState
from pipeline.ops.ingest_service import IngestService
from pipeline.results.dead_letter import Refused, Rejection, set_aside
from tests.fixtures import media
from tests.fixtures.services import RedisServer, RtspServer, wait_for
from tests.pipeline.ops.ingest_helpers import UNITS, http_get, make_config, read_stream, scrape, wait_until


def test_rtsp_frames_arrive_at_fps_in_order_and_match_a_direct_decode(
        rtsp_server: RtspServer, redis_server: RedisServer, video_dir: Path) -> None:
    files = {"w1-slideshow": video_dir / "slideshow.mp4", "w1-bikes": video_dir / "bikes.mp4"}
    for stream_id in files:
        redis_server.client().delete(frames_key(stream_id))
    cfg = make_config([{"id": "w1-slideshow", "url": rtsp_server.url("slideshow"), "fps": 5},
                       {"id": "w1-bikes", "url": rtsp_server.url("bikes"), "fps": 5}], redis_server.url())
    with IngestService(cfg) as worker:
        wait_until(lambda: all(worker.camera_state(s) == CameraState.LIVE for s in files), 15, "live")
        time.sleep(4.0)
    for stream_id, path in files.items():
        msgs = read_stream(redis_server, stream_id)
        assert len(msgs) >= 15, stream_id
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        ts = [m.capture_ts_ns for m in msgs]
        assert all(b > a for a, b in itertools.pairwise(ts))
        rate = (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9)
        assert 4.0 < rate < 6.0, (stream_id, rate)
        assert abs(ts[-1] / 1e9 - time.time()) < 10
        reference = {f.tobytes(): i for i, f in enumerate(media.model_frames(path))}
        matched = []
        for m in msgs:
            assert (m.height, m.width, m.crop().dtype.name) == (224, 224, "uint8")
            assert (m.source_height, m.source_width) == ((480, 640) if "slide" in stream_id else (272, 640))
            assert m.crop().tobytes() in reference, f"{stream_id} frame {m.seq} matches no decoded frame"
            matched.append(reference[m.crop().tobytes()])
        if stream_id == "w1-bikes":  # moving footage: the matched frame numbers advance (mod the loop)
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
        # (A camera live again keeps its error as previous_error: the truncated file goes live each pass.)
        wait_until(lambda: all(worker.cameras[s].last_error or worker.cameras[s].previous_error for s in expected),
                   25, "every broken camera")
        counts = {s: len(read_stream(redis_server, s)) for s in ("w2-good", "w2-file")}
        time.sleep(2.0)
        for stream_id, n in counts.items():  # the good cameras kept flowing meanwhile
            assert len(read_stream(redis_server, stream_id)) >= n + 6, stream_id
            assert worker.camera_state(stream_id) == CameraState.LIVE
        # Retrying cannot help these: after ingest.max_failures (3) of the same error they are failed.
        permanent = {"w2-wrongpath", "w2-badcreds", "w2-notvideo"}
        wait_until(lambda: all(worker.camera_state(s) == CameraState.FAILED for s in permanent), 20, "failed")
        status = {c["id"]: c for c in worker.status()["cameras"]}
    for stream_id, reason in expected.items():
        # The truncated file plays its first part each pass, so it is live again now and then: its error
        # is then history (previous_error).
        assert reason in status[stream_id]["last_error"] + status[stream_id]["previous_error"], \
            (stream_id, status[stream_id])
        if stream_id in permanent:
            assert status[stream_id]["state"] == "failed", status[stream_id]
        else:  # a silent server, a file that ended: transient, retried for ever
            assert status[stream_id]["state"] in ("backing_off", "connecting", "live"), status[stream_id]
        logged = [r.getMessage() for r in caplog.records if f"camera {stream_id} " in r.getMessage()]
        assert any(reason in line and r"backing_off" in line for line in logged), (stream_id, logged)
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
        worker.frames.eviction_check_s = 0.3
        wait_until(lambda: server.client().xinfo_stream(frames_key("w4"))["entries-added"] > 40
                   if server.client().exists(frames_key("w4")) else False, 10, "40 frames")
        time.sleep(0.5)
        _, metrics = http_get(worker.http_port, "/metrics")
    evicted = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.name == "vigil_ingest_dropped_frames_total" and s.labels["reason"] == "evicted"]
    assert evicted and evicted[0] >= 20
    assert server.client().xlen(frames_key("w4")) < 20


# -- metrics, health, reload ---------------------------------------------------------------------------


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
            assert name.startswith(("vigil_ingest_", "vigil_camera_")), name
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
        # The adaptive sampling's per-camera share of a batch follows the camera count across a reload.
        batch = cfg.inference.batch_size * cfg.inference.replicas
        assert worker._governor.batch_share == batch / 2
        worker.reload(make_config([keep], redis_server.url()))
        assert worker._governor.batch_share == batch
        # A new fps alone is applied in place: same camera, no reconnect, the new rate in /readyz.
        worker.reload(make_config([{**keep, "fps": 2}], redis_server.url()))
        assert worker.cameras["w5-keep"] is kept_cam and kept_cam.reconnects == 0
        assert {c["id"]: c["fps"] for c in json.loads(http_get(port, "/readyz")[1])["cameras"]} == {
            "w5-keep": {"configured": 2, "effective": 2}}




def test_ready_means_buses_up_and_a_camera_live(redis_server: RedisServer, video_dir: Path,
                                                  silent_port: int) -> None:
    """Not ready while the only camera has never delivered a frame; ready once one camera is live.
    Times in /readyz are wall-clock ISO 8601 (UTC), not monotonic seconds."""
    hung = {"id": "w6-hung", "url": f"rtsp://127.0.0.1:{silent_port}/x", "fps": 5}
    cfg = make_config([hung], redis_server.url())
    with IngestService(cfg) as worker:
        port = worker.http_port
        time.sleep(1.0)
        code, body = http_get(port, "/readyz")
        doc = json.loads(body)
        assert code == 503 and doc["ready"] is False
        assert doc["not_ready"] == ["no camera is live yet (of 1)"] and doc["bus"][0]["up"] is True
        checked = datetime.fromisoformat(doc["checked_at"])
        assert checked.tzinfo is not None and abs(checked.timestamp() - time.time()) < 5
        since = datetime.fromisoformat(doc["cameras"][0]["since"])
        assert 0 <= checked.timestamp() - since.timestamp() < 5
        worker.reload(make_config([hung, {"id": "w6-file", "url": str(video_dir / "bikes.mp4"), "fps": 5,
                                          "loop": True}], redis_server.url()))
        wait_until(lambda: worker.camera_state("w6-file") == CameraState.LIVE, 10, "live")
        code, body = http_get(port, "/readyz")
        assert code == 200 and json.loads(body)["not_ready"] == []


def test_console_pictures_and_statuses_expire_in_redis(redis_server: RedisServer, video_dir: Path) -> None:
    """Each camera's latest picture (JPEG at preview size, at most preview_fps) and its status are in Redis
    for the console, and both expire once the camera is gone."""
    client = redis_server.client()
    cam = {"id": "w7-preview", "url": str(video_dir / "bikes.mp4"), "fps": 5, "loop": True}
    cfg = make_config([cam], redis_server.url())
    cfg = cfg.model_copy(update={"console": cfg.console.model_copy(update={"preview_width": 320, "preview_ttl_s": 3})})
    with IngestService(cfg):
        assert wait_for(lambda: client.get(preview_key("w7-preview")) is not None, 10)
        assert wait_for(lambda: b'"live"' in (client.get(camera_status_key("w7-preview")) or b""), 5)
        status = json.loads(client.get(camera_status_key("w7-preview")) or b"{}")
        assert status["state"] == "live" and status["fps"]["configured"] == 5 and "url" in status
        pictures = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.2:
            pictures.add(client.get(preview_key("w7-preview")))
            time.sleep(0.05)
        assert 2 <= len(pictures) <= 5  # one a second (preview_fps 1), from the moving footage
        jpeg = cv2.imdecode(np.frombuffer(client.get(preview_key("w7-preview")) or b"", np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape == (136, 320, 3)  # 640x272 at the preview width, aspect kept
        assert 0 < client.pttl(preview_key("w7-preview")) <= 3000
    assert wait_for(lambda: client.get(preview_key("w7-preview")) is None
                    and client.get(camera_status_key("w7-preview")) is None, 8)


def test_readyz_lists_what_each_sink_refused(clean_redis_url: str, silent_port: int) -> None:
    """Records a sink's output refused for good are listed per sink with the last reason; they do not make
    the pipeline not ready (readiness is the buses and the cameras)."""
    hung = {"id": "w7-hung", "url": f"rtsp://127.0.0.1:{silent_port}/x", "fps": 5}
    cfg = make_config([hung], clean_redis_url).model_copy(update={"sinks": validate_config({
        "sinks": [{"type": "webhook", "name": "hook", "url": "http://u:pw-x@127.0.0.1:9/h"},
                  {"type": "jsonl", "path": "/tmp/unused.jsonl"}]}, environ={}).sinks})
    refused = [(Refused(f"{i}-0".encode(), {b"v": b"1", b"stream": b"w7-hung"}, "w7-hung"),
                Rejection(f"webhook http://u:***@127.0.0.1:9/h: HTTP {status}", status))
               for i, status in enumerate([413, 422])]
    set_aside(redis.Redis.from_url(clean_redis_url), STANDALONE, sink="hook", group=sink_group("hook"),
              maxlen=100, refused=refused, ack_ids=[], now_s=1_700_000_000.0)
    with IngestService(cfg) as worker:
        code, body = http_get(worker.http_port, "/readyz")
    doc = json.loads(body)
    assert code == 503 and doc["not_ready"] == ["no camera is live yet (of 1)"]  # the sinks are not the reason
    assert doc["sinks"] == [
        {"name": "hook", "rejected_records": 2, "last_rejection": {
            "reason": "webhook http://u:***@127.0.0.1:9/h: HTTP 422", "status": 422, "at": "2023-11-14T22:13:20.000Z"}},
        {"name": "jsonl-1", "rejected_records": 0, "last_rejection": None}]
