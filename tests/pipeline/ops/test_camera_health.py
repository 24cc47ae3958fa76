"""Camera health end to end: real footage made bad with ffmpeg, served by the real RTSP server, judged by
the ingest service (real Redis), seen in /readyz and /metrics, for a minute."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import validate_config
from pipeline.core.keys import RESULTS_KEY
from pipeline.ops.ingest_service import IngestService
from pipeline.ops.sink_service import SinkService
from tests.fixtures import media
from tests.fixtures.services import RedisServer, RtspServer, wait_for
from tests.pipeline.ops.ingest_helpers import http_get, make_config, scrape

SHORT = {"frozen_after_s": 5, "dark_after_s": 5, "blurred_after_s": 5, "moved_after_s": 5, "clear_after_s": 2,
         "reference_after_s": 10}
BAD_S, SAMPLE_S = 12, 0.2  # each bad segment lasts 12 s, then good footage; cameras sample at 5 fps
SLACK_S = 1.5  # from a camera going live to its first frames being judged, and /readyz polling
EARLY_S = 0.5  # "live" is seen by polling, a little after the stream (and the file) started


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory, video_dir: Path, images_dir: Path) -> dict[str, Path]:
    d, bikes = tmp_path_factory.mktemp("health"), video_dir / "bikes.mp4"
    return {"frozen": media.frozen_then_live(bikes, images_dir / "parrot.png", d / "frozen.mp4", BAD_S),
            "dark": media.dark_then_live(bikes, d / "dark.mp4", BAD_S),
            "blurred": media.blurred_then_live(bikes, d / "blurred.mp4", BAD_S),
            "moved": media.shifted_view(bikes, d / "moved.mp4", each_s=20),
            "bikes": bikes, "slideshow": video_dir / "slideshow.mp4"}


@pytest.fixture
def watched(footage: dict[str, Path], rtsp_factory: Callable[..., RtspServer], redis_server: RedisServer,
            tmp_path: Path) -> Iterator[tuple[IngestService, dict[str, float]]]:
    server = rtsp_factory(footage)
    streams: list[dict[str, Any]] = [{"id": f"h-{name}", "url": server.url(name), "fps": 1 / SAMPLE_S,
                                      "health": SHORT} for name in ("frozen", "dark", "blurred", "moved")]
    streams += [{"id": f"h-{name}", "url": server.url(name), "fps": 1 / SAMPLE_S} for name in ("bikes", "slideshow")]
    redis_server.client().delete(RESULTS_KEY)  # this test's events only
    sinks = validate_config({"redis": {"urls": [redis_server.url()]}, "streams": streams, "metrics": {"port": 0},
                             "sinks": [{"type": "events", "path": str(tmp_path / "events.jsonl")}]}, environ={})
    with SinkService(sinks, consumer="health-test"), IngestService(make_config(streams, redis_server.url())) as worker:
        live: dict[str, float] = {}
        deadline = time.monotonic() + 20
        while len(live) < len(streams) and time.monotonic() < deadline:
            for cam in worker.status()["cameras"]:
                if cam["state"] == "live":
                    live.setdefault(cam["id"], time.monotonic())
            time.sleep(0.05)
        assert len(live) == len(streams), worker.status()
        yield worker, live


def transitions(worker: IngestService, live: dict[str, float], seconds: float,
                on_moved: Callable[[], object]) -> dict[str, list[tuple[str, bool, float]]]:
    """Poll /readyz: each camera's (condition, entered?, seconds after the camera went live)."""
    seen: dict[str, set[str]] = {stream_id: set() for stream_id in live}
    out: dict[str, list[tuple[str, bool, float]]] = {stream_id: [] for stream_id in live}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, body = http_get(worker.http_port, "/readyz")
        for cam in json.loads(body)["cameras"]:
            now = set(cam["health"])
            stream_id = cam["id"]
            for c in sorted(now ^ seen[stream_id]):
                out[stream_id].append((c, c in now, time.monotonic() - live[stream_id]))
                if stream_id == "h-moved" and c == "moved" and c in now:
                    on_moved()
            assert set(cam["health_since"]) == now
            seen[stream_id] = now
        time.sleep(0.1)
    return out


def test_frozen_dark_blurred_and_moved_cameras_are_flagged_in_time_and_normal_ones_never(
        watched: tuple[IngestService, dict[str, float]], tmp_path: Path) -> None:
    worker, live = watched
    metrics_while_moved: dict[str, list[Any]] = {}

    def gauges_say_moved() -> bool:  # /readyz and /metrics are two requests: the gauge follows within moments
        metrics_while_moved.update(scrape(worker.http_port))
        return any(s.labels == {"stream": "h-moved", "condition": "moved"} and s.value == 1
                   for s in metrics_while_moved["vigil_camera_health"])

    seen = transitions(worker, live, 60, lambda: wait_for(gauges_say_moved, 1.0, 0.02))
    for name in ("frozen", "dark", "blurred"):
        events = seen[f"h-{name}"][:2]
        assert [(c, on) for c, on, _ in events] == [(name, True), (name, False)], seen[f"h-{name}"]
        entered, cleared = events[0][2], events[1][2]
        assert 5 - EARLY_S <= entered <= 5 + SAMPLE_S + SLACK_S, (name, entered)  # within its time plus one sample
        assert BAD_S + 2 - EARLY_S <= cleared <= BAD_S + 2 + SAMPLE_S + SLACK_S, (name, cleared)  # good again
    # The view is taken as reference after 10 s; at 20 s the camera "turns"; the averaged view follows within
    # a few seconds, then moved holds 5 s. At 40 s the file loops back to the first view: moved clears.
    moved = seen["h-moved"]
    assert [(c, on) for c, on, _ in moved] == [("moved", True), ("moved", False)], moved
    assert 20 + 5 <= moved[0][2] <= 20 + 5 + 5, moved
    assert 40 + 2 - EARLY_S <= moved[1][2] <= 40 + 2 + 5, moved
    health = {(s.labels["stream"], s.labels["condition"]): s.value for s in metrics_while_moved["vigil_camera_health"]}
    assert health[("h-moved", "moved")] == 1 and health[("h-bikes", "moved")] == 0
    assert seen["h-bikes"] == [] and seen["h-slideshow"] == []  # real footage with motion and cuts: no alarm
    code, body = http_get(worker.http_port, "/readyz")
    assert code == 200 and {c["id"]: c["health"] for c in json.loads(body)["cameras"]}["h-bikes"] == []
    # Every transition also went through the results stream to the events sink, in order, with its statistics.
    out = tmp_path / "events.jsonl"

    def emitted(kind: str) -> list[dict[str, Any]]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == kind]

    assert wait_for(lambda: len(emitted("health_changed")) >= sum(map(len, seen.values())), 10)
    events = emitted("health_changed")
    # The cameras' state changes went the same way: each was connecting, then live.
    states = {stream_id: [e["state"] for e in emitted("state_changed") if e["stream"] == stream_id]
              for stream_id in seen}
    assert all(s[:2] == ["connecting", "live"] for s in states.values()), states
    got = {stream_id: [(e["condition"], e["active"]) for e in events if e["stream"] == stream_id] for stream_id in seen}
    assert got == {stream_id: [(c, on) for c, on, _ in t] for stream_id, t in seen.items()}
    frozen = next(e for e in events if e["stream"] == "h-frozen" and e["active"])
    assert frozen["stats"]["change"] < 0.5 and frozen["at"] > 0


def post(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST"),
                                    timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code)


def test_a_frozen_camera_with_skip_frozen_stops_publishing_and_a_view_can_be_accepted(
        footage: dict[str, Path], redis_server: RedisServer) -> None:
    stream_id = "h-skip"
    stream = {"id": stream_id, "url": str(footage["frozen"]), "loop": True, "fps": 5,
              "health": {"frozen_after_s": 2, "clear_after_s": 1, "skip_frozen": True}}
    with IngestService(make_config([stream], redis_server.url())) as worker:
        assert wait_for(lambda: worker.status()["cameras"][0]["health"] == ["frozen"], 10)

        def counts() -> tuple[float, float]:
            m = scrape(worker.http_port)
            published = sum(x.value for x in m["vigil_ingest_published_frames"] if x.labels["stream"] == stream_id
                            and x.name.endswith("_total"))
            frozen = sum(x.value for x in m.get("vigil_ingest_dropped_frames", []) if x.labels["stream"] == stream_id
                         and x.labels["reason"] == "frozen" and x.name.endswith("_total"))
            return published, frozen

        before = counts()
        time.sleep(2)
        after = counts()
        assert after[0] == before[0] and after[1] >= before[1] + 8  # 5 fps for 2 s: counted, not published
        assert post(worker.http_port, f"/cameras/{stream_id}/accept-view") == 200
        assert post(worker.http_port, "/cameras/nope/accept-view") == 404
        assert post(worker.http_port, "/elsewhere") == 404
