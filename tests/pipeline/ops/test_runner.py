"""End to end (`vigil run`'s LocalPipeline): RTSP cameras -> Redis -> Ray Serve -> sinks, with metrics.

Real GStreamer RTSP server serving the shared H.264 videos, real redis-server (embedded), real Ray
Serve, the shared model; everything on loopback.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.core.config import MqttSinkConfig, validate_config
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.mqtt import Mosquitto, Subscriber
from tests.fixtures.services import RtspServer, wait_for
from tests.fixtures.sockets import descendants, is_loopback, listening, process_name

MQTT_PASSWORD = "Runner-Mqtt-Pw-1"


def config(streams: list[dict[str, Any]], out: Path, model: Path) -> Any:
    return validate_config({
        "streams": streams,
        "ingest": {"open_timeout_s": 5, "read_timeout_s": 2, "stall_timeout_s": 2, "backoff_base_s": 0.5,
                   "backoff_cap_s": 2},
        "inference": {"model": str(model), "device": "cpu", "batch_size": 16, "batch_window_ms": 20,
                      "replica_cpus": 0.5, "http_port": 0, "claim_idle_s": 5},
        "sinks": [{"type": "jsonl", "path": str(out)}],
        "metrics": {"port": 0}, "console": {"port": 0},
    }, environ={})


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``(metric name, stream) -> value`` summed over other labels, from the real /metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[tuple[str, str], float] = {}
    for m in re.finditer(r'^(\w+)\{([^}]*)\} (\S+)$', text, re.MULTILINE):
        stream = re.search(r'stream="([^"]*)"', m.group(2))
        if stream:
            key = (m.group(1), stream.group(1))
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def drained(metrics_port: int, stream_ids: list[str]) -> bool:
    """No camera live and every queue empty, in one scrape: the counts are final.

    A queue is empty most of the time even while its camera publishes; a camera publishes only while
    live, so once none is live (the server gone) a frame decoded just before the kill cannot land later.
    """
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    live = re.search(r'^vigil_ingest_camera_state\{[^}]*vigil_ingest_camera_state="live"[^}]*\} 1\.0$',
                     text, re.MULTILINE)
    m = scrape(metrics_port)
    return live is None and all(m.get(("vigil_pipeline_queue_frames", i), 1) == 0 for i in stream_ids)


def assert_segments_in_order(results: list[dict[str, Any]], expected: list[str]) -> None:
    """One camera's results of the slideshow at 5 fps: each segment's label, in order, for about 2 s each."""
    results = sorted(results, key=lambda r: r["seq"])
    assert all(r["scene"] and r["scene"]["label"] for r in results)
    # Runs of the same top-1 label; runs shorter than 3 results are the frames around a cut.
    runs = [(label, len(list(g))) for label, g in groupby(r["top_k"][0]["label"] for r in results)]
    labels = [label for label, n in runs if n >= 3]
    assert set(expected) <= set(labels), runs
    start = expected.index(labels[0])
    cycle = (expected[start:] + expected[:start]) * 3
    assert labels == cycle[:len(labels)], f"segment labels out of order: {runs}"
    full = [n for label, n in runs[1:-1] if n >= 3]  # whole segments: 2 s at 5 fps = about 10 results
    assert full and all(7 <= n <= 13 for n in full), runs


def test_slideshow_over_rtsp_gives_each_segments_label(tmp_path: Path, rtsp_server: RtspServer, *,
                                                       shared_model: Path, video_dir: Path,
                                                       mosquitto_factory: Callable[..., Mosquitto],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Each segment's label, in order, in the results and on MQTT (the label topic, after hysteresis)."""
    segments = json.loads((video_dir / "slideshow.json").read_text())["segments"]
    expected = [s["expected_top1"] for s in segments]
    out = tmp_path / "results.jsonl"
    broker = mosquitto_factory(users={"vigil": MQTT_PASSWORD})
    labels_topic = Subscriber(broker, ["vigil/slides/label", "vigil/slides/state"], user=("vigil", MQTT_PASSWORD))
    base = config([{"id": "slides", "url": rtsp_server.url("slideshow"), "fps": 5}], out, shared_model)
    mqtt = {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "username": "vigil", "password": MQTT_PASSWORD,
            "watch": {"people": 0.5}}
    cfg = base.model_copy(update={"sinks": [*base.sinks, MqttSinkConfig.model_validate(mqtt)]})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert wait_for(lambda: len(read_results(out)) >= 75, 120), f"only {len(read_results(out))} results"
        assert wait_for(lambda: len(labels_topic.on("vigil/slides/label")) >= 6, 30)
        metrics = httpx.get(f"http://127.0.0.1:{pipeline.metrics_port}/metrics", timeout=10).text
        assert pipeline.console is not None  # the console's timeline follows the segments too
        timeline = httpx.get(f"{pipeline.console.url}api/v1/streams/slides/events", timeout=10).json()
        view = httpx.get(f"{pipeline.console.url}api/v1/streams/slides", timeout=10).json()
    assert view["state"] == "live" and view["label"]["name"] in expected
    shown = [e["to"] for e in timeline if e["event"] == "label_changed"]
    start = expected.index(shown[0])
    assert len(shown) >= 5 and shown == ((expected[start:] + expected[:start]) * 3)[:len(shown)], shown
    assert 'vigil_sink_written_results_total{sink="mqtt-1"}' in metrics and MQTT_PASSWORD not in metrics
    assert_segments_in_order(read_results(out), expected)
    # The MQTT label topic said each segment's label, in the slideshow's order.
    said = [m.json()["label"] for m in labels_topic.on("vigil/slides/label")]
    start = expected.index(said[0])
    assert said == ((expected[start:] + expected[:start]) * 3)[:len(said)], said
    assert [m.json()["state"] for m in labels_topic.on("vigil/slides/state")][:2] == ["connecting", "live"]
    labels_topic.close()
    assert MQTT_PASSWORD not in caplog.text


def test_four_cameras_and_exact_accounting(tmp_path: Path, rtsp_factory: Callable[..., RtspServer],
                                           shared_model: Path, video_dir: Path) -> None:
    server = rtsp_factory({"slideshow": video_dir / "slideshow.mp4", "bikes": video_dir / "bikes.mp4"})
    ids = ["slides-1", "slides-2", "bikes-1", "bikes-2"]
    streams = [{"id": i, "url": server.url("slideshow" if i.startswith("slides") else "bikes"), "fps": 4}
               for i in ids]
    out = tmp_path / "results.jsonl"
    with LocalPipeline(config(streams, out, shared_model), ray_cpus=2) as pipeline:
        assert wait_for(lambda: {r["stream"] for r in read_results(out)} == set(ids), 120)
        # Everything this process started (Redis, Ray's GCS, raylet, workers and agents, Serve's proxy, the
        # metrics endpoint) listens on loopback only.
        sockets = listening(descendants(os.getpid()))
        assert any(process_name(pid) == "gcs_server" for pid, _, _ in sockets)  # Ray's are among them
        assert [(process_name(pid), addr, port) for pid, addr, port in sockets if not is_loopback(addr)] == []
        time.sleep(3)
        server.kill()  # the cameras stop publishing; then the queues drain
        assert wait_for(lambda: drained(pipeline.metrics_port, ids), 60)
        m = scrape(pipeline.metrics_port)
        for i in ids:
            published = m[("vigil_pipeline_published_frames_total", i)]
            assert published == m[("vigil_ingest_published_frames_total", i)]  # no outage here: both views agree
            inferred = m[("vigil_pipeline_inferred_frames_total", i)]
            dropped = m[("vigil_pipeline_dropped_frames_total", i)]
            dead = m[("vigil_pipeline_dead_lettered_frames_total", i)]
            assert published > 0 and inferred > 0
            assert published == inferred + dropped + dead, (i, published, inferred, dropped, dead)
        assert wait_for(lambda: len(read_results(out)) == sum(m[("vigil_pipeline_inferred_frames_total", i)]
                                                              for i in ids), 20)
