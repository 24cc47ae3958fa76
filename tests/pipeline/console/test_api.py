"""The console's REST API and page on a real Redis, fed by a real ingest worker and real result records."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import redis

from pipeline.console.server import ConsoleServer
from pipeline.core.bus_layout import BusLayout
from pipeline.core.camera_store import StreamStore, camera_ids, effective_streams
from pipeline.core.config import VigilConfig, validate_config
from pipeline.core.keys import RESULTS_KEY, STANDALONE, sink_group
from pipeline.ops.ingest_service import IngestService
from pipeline.ops.pipeline_metrics import PipelineCollector
from pipeline.results.dead_letter import Refused, Rejection, set_aside
from tests.fixtures.services import free_port, wait_for
from tests.pipeline.ops.ingest_helpers import FAST
from tests.pipeline.results.sinks.records import record

TOKEN = "console-token-0123456789"
SECRET = "Cam-Pw-Never-Shown"


def config(redis_url: str, video_dir: Path, **console: Any) -> VigilConfig:
    return validate_config({
        "redis": {"urls": [redis_url]}, "ingest": FAST, "metrics": {"port": 0},
        "streams": [{"id": "lobby", "url": str(video_dir / "bikes.mp4"), "fps": 5, "loop": True},
                    {"id": "gate", "url": f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/live", "fps": 2}],
        "console": {"port": 0, "token": TOKEN, **console}}, environ={})


@pytest.fixture
def console(clean_redis_url: str, video_dir: Path) -> Iterator[str]:
    cfg = config(clean_redis_url, video_dir)
    client = redis.Redis.from_url(clean_redis_url)
    now = time.time() - 10  # results of the last seconds, as a running pipeline writes them
    for i, label in enumerate(["cat"] * 4 + ["dog"] * 4):
        r = dataclasses.replace(record("lobby", label, i=i), capture_ts=now + i, inference_ts=now + i + 0.5)
        client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
    clients = BusLayout.from_config(cfg.redis).connect(5)
    with IngestService(cfg) as ingest, ConsoleServer(cfg, clients) as server:
        assert wait_for(lambda: ingest.camera_state("lobby") is not None
                        and ingest.camera_state("lobby").value == "live", 15)
        assert wait_for(lambda: httpx.get(f"{server.url}api/v1/streams/lobby/snapshot.jpg").status_code == 200, 10)
        yield server.url
    clients.close()


def test_streams_list_state_label_and_never_a_password(console: str) -> None:
    assert wait_for(lambda: {v["id"]: v["state"] for v in httpx.get(f"{console}api/v1/streams").json()}.get("gate")
                    in ("backing_off", "connecting"), 10)
    views = {v["id"]: v for v in httpx.get(f"{console}api/v1/streams").json()}
    assert set(views) == {"lobby", "gate"}
    lobby, gate = views["lobby"], views["gate"]
    assert lobby["state"] == "live" and lobby["fps"] == 5 and lobby["label"] == {"name": "dog", "score": 0.9}
    assert lobby["scene"]["name"] == "animals" and lobby["frame_age_p95_ms"] == 500.0
    assert gate["url"] == "rtsp://admin:***@127.0.0.1:" + gate["url"].rsplit(":", 1)[1] and gate["label"] is None
    for path in ("api/v1/streams", "api/v1/streams/gate", "api/v1/streams/gate/events", "api/v1/openapi.json"):
        assert SECRET not in httpx.get(f"{console}{path}").text
    assert httpx.get(f"{console}api/v1/streams/nope").status_code == 404


def test_snapshot_events_page_docs_and_live_updates(console: str) -> None:
    jpeg = httpx.get(f"{console}api/v1/streams/lobby/snapshot.jpg")
    assert jpeg.headers["content-type"] == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (272, 640, 3)
    labelled = httpx.get(f"{console}api/v1/streams/lobby/snapshot.jpg?label=true")
    assert labelled.status_code == 200 and labelled.content != jpeg.content
    missing = httpx.get(f"{console}api/v1/streams/gate/snapshot.jpg")
    assert missing.status_code == 404 and "no recent picture" in missing.json()["detail"]
    events = httpx.get(f"{console}api/v1/streams/lobby/events").json()
    changes = [(e["event"], e.get("to")) for e in events if e["event"] == "label_changed"]
    assert changes == [("label_changed", "cat"), ("label_changed", "dog")]
    assert any(e["event"] == "state_changed" and e["state"] == "live" for e in events)
    assert len(httpx.get(f"{console}api/v1/streams/lobby/results?limit=3").json()) == 3
    page = httpx.get(console)
    assert page.status_code == 200 and 'id="grid"' in page.text
    assert httpx.get(f"{console}static/console.js").status_code == 200
    assert httpx.get(f"{console}docs").status_code == 200
    paths = httpx.get(f"{console}api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/streams", "/api/v1/streams/{sid}", "/api/v1/streams/{sid}/snapshot.jpg"} <= set(paths)
    with httpx.stream("GET", f"{console}api/v1/live", timeout=10) as live:
        lines = live.iter_lines()
        assert next(lines) == "event: streams"
        first = json.loads(next(lines).removeprefix("data: "))
    assert {v["id"] for v in first} == {"lobby", "gate"}


def test_reads_can_need_the_token(clean_redis_url: str, video_dir: Path) -> None:
    cfg = config(clean_redis_url, video_dir, token_for_reads=True)
    clients = BusLayout.from_config(cfg.redis).connect(5)
    try:
        with ConsoleServer(cfg, clients) as server:
            refused = httpx.get(f"{server.url}api/v1/streams")
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in refused.text
            wrong = httpx.get(f"{server.url}api/v1/streams", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = httpx.get(f"{server.url}api/v1/streams", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and {v["id"] for v in ok.json()} == {"lobby", "gate"}
            assert all(v["state"] == "unknown" for v in ok.json())  # no ingest worker here
    finally:
        clients.close()


def test_cameras_added_changed_and_removed_at_runtime_reach_ingest_and_survive_a_restart(
        clean_redis_url: str, video_dir: Path) -> None:
    cfg = config(clean_redis_url, video_dir)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    new = {"id": "added", "url": str(video_dir / "slideshow.mp4"), "fps": 4, "loop": True}
    clients = BusLayout.from_config(cfg.redis).connect(5)
    try:
        with IngestService(cfg) as ingest, ConsoleServer(cfg, clients) as server:
            api = f"{server.url}api/v1/streams"
            assert httpx.post(api, json=new).status_code == 401  # changes need the token
            bad = httpx.post(api, json={**new, "fps": 0}, headers=auth)
            assert bad.status_code == 422 and bad.json()["detail"]["problems"] == ["fps: must be > 0"]
            unknown = httpx.post(api, json={**new, "fsp": 4}, headers=auth)
            assert unknown.status_code == 422 and "fsp: unknown key; did you mean 'fps'?" in unknown.text
            made = httpx.post(api, json=new, headers=auth)
            assert made.status_code == 201 and made.json()["state"] == "accepted"
            assert httpx.post(api, json=new, headers=auth).status_code == 409
            # Every ingest worker picks the change up from Redis within seconds, without a restart.
            assert wait_for(lambda: ingest.camera_state("added") is not None
                            and ingest.camera_state("added").value == "live", 15)
            assert wait_for(lambda: httpx.get(f"{api}/added").json()["state"] == "live", 5)
            changed = httpx.patch(f"{api}/added", json={"fps": 2}, headers=auth)
            assert changed.status_code == 200 and changed.json()["fps"] == 2
            assert wait_for(lambda: ingest.cameras["added"].stream.fps == 2, 10)
            assert httpx.delete(f"{api}/lobby", headers=auth).status_code == 204  # a camera of the YAML
            assert wait_for(lambda: "lobby" not in ingest.cameras, 10)
            # The pipeline's metrics follow the cameras there are now (labels stay bounded to them).
            store = StreamStore(clients.client(0))
            collector = PipelineCollector(BusLayout.from_config(cfg.redis), camera_ids(list(cfg.streams), store),
                                          timeout_s=5, scrape_bound_s=5)
            counted = {s.labels["stream"] for m in collector.collect() for s in m.samples
                       if m.name == "vigil_pipeline_published_frames"}
            collector.close()
            assert counted == {"gate", "added"}
            assert {v["id"] for v in httpx.get(api).json()} == {"gate", "added"}
            assert httpx.delete(f"{api}/lobby", headers=auth).status_code == 404
        # A restarted worker reads the store on start: the added camera runs, the removed one does not.
        with IngestService(cfg) as again:
            assert set(again.cameras) == {"gate", "added"} and again.cameras["added"].stream.fps == 2
    finally:
        clients.close()


def test_sinks_list_what_each_refused_and_never_a_password(clean_redis_url: str, video_dir: Path) -> None:
    cfg = validate_config({
        "redis": {"urls": [clean_redis_url]}, "console": {"port": 0},
        "streams": [{"id": "lobby", "url": str(video_dir / "bikes.mp4"), "fps": 5, "loop": True}],
        "sinks": [{"type": "webhook", "name": "hook", "url": f"http://u:{SECRET}@127.0.0.1:9/h"},
                  {"type": "jsonl", "path": "/tmp/unused.jsonl"}]}, environ={})
    reason = "webhook http://u:***@127.0.0.1:9/h: HTTP 422 Unprocessable Entity"
    set_aside(redis.Redis.from_url(clean_redis_url), STANDALONE, sink="hook", group=sink_group("hook"), maxlen=100,
              refused=[(Refused(b"1-0", {b"v": b"1"}, "lobby"), Rejection(reason, 422))], ack_ids=[],
              now_s=1_700_000_000.0)
    clients = BusLayout.from_config(cfg.redis).connect(5)
    with ConsoleServer(cfg, clients) as server:
        response = httpx.get(f"{server.url}api/v1/sinks")
    clients.close()
    assert response.json() == [
        {"name": "hook", "rejected_records": 1,
         "last_rejection": {"reason": reason, "status": 422, "at": "2023-11-14T22:13:20.000Z"}},
        {"name": "jsonl-1", "rejected_records": 0, "last_rejection": None}]
    assert SECRET not in response.text


def test_zones_of_a_yaml_camera_are_stored_as_an_update_never_with_its_password_and_keep_its_health(
        clean_redis_url: str, video_dir: Path) -> None:
    cfg = validate_config({
        "redis": {"urls": [clean_redis_url]}, "metrics": {"port": 0}, "console": {"port": 0, "token": TOKEN},
        "streams": [{"id": "lobby", "url": str(video_dir / "bikes.mp4")},
                    {"id": "gate", "url": f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/live",
                     "health": {"frozen_after_s": 10}}],
        "classifiers": [{"id": "door", "model": "door.onnx", "classes": ["a", "b"], "cameras": ["lobby"]}]},
        environ={})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    clients = BusLayout.from_config(cfg.redis).connect(5)
    try:
        with ConsoleServer(cfg, clients) as server:
            api = f"{server.url}api/v1/streams"
            zones = [{"id": "left", "xyxy": [0, 0, 0.5, 1]}]
            assert httpx.put(f"{api}/gate/zones", json=zones, headers=auth).status_code == 200
            stored = redis.Redis.from_url(clean_redis_url).hget("vigil:streams", "gate")
            assert stored is not None and SECRET.encode() not in stored  # type: ignore[operator]
            assert json.loads(stored) == {"update": {"zones": zones}}  # type: ignore[arg-type]
            store = StreamStore(clients.client(0))
            gate = next(s for s in effective_streams(cfg.streams, store.changes())[0] if s.id == "gate")
            assert gate.zone_ids == ("full", "left") and gate.health.frozen_after_s == 10 and SECRET in gate.url
            # Removing a camera a classifier names is refused; what the classifiers already lacked does not block.
            gone = httpx.delete(f"{api}/lobby", headers=auth)
            assert gone.status_code == 422 and "classifiers[0].cameras: no camera 'lobby'" in gone.text
            assert httpx.put(f"{api}/gate/zones", json=[], headers=auth).status_code == 200
    finally:
        clients.close()
