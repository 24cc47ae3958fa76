"""`vigil sink` as a process on a real Redis: its HTTP (/metrics, /healthz, /readyz) on the shared stack,
/readyz following Redis away and back, and SIGTERM exits 0."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from pipeline.core.keys import RESULTS_KEY, STANDALONE, sink_group
from pipeline.ops.metrics import CONTENT_TYPE_LATEST
from pipeline.results.dead_letter import Refused, Rejection, set_aside
from tests.fixtures.services import RedisServer
from tests.pipeline.ops.ingest_helpers import http_get, wait_until
from tests.pipeline.results.sinks.records import record

LISTENING = re.compile(r"^vigil sink: metrics on 127\.0\.0\.1:(\d+)$", re.MULTILINE)


def test_metrics_healthz_and_readyz_of_a_running_sink_worker(
        tmp_path: Path, redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(password="Redis-Pw-5150")
    client = server.client()
    for i in range(5):
        client.xadd(RESULTS_KEY, record("lobby", "cat", i=i).to_fields())  # type: ignore[arg-type]
    reason = "webhook http://127.0.0.1:9/h: HTTP 422 Unprocessable Entity"  # refused by an earlier run
    set_aside(client, STANDALONE, sink="jsonl-0", group=sink_group("jsonl-0"), maxlen=100,
              refused=[(Refused(b"1-0", {b"v": b"1"}, "lobby"), Rejection(reason, 422))], ack_ids=[],
              now_s=1_700_000_000.0)
    out = tmp_path / "results.jsonl"
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"urls": [server.url()], "socket_timeout_s": 1},
        "streams": [{"id": "lobby", "url": "rtsp://127.0.0.1:1/none"}],
        "sinks": [{"type": "jsonl", "path": str(out)}], "metrics": {"port": 0}}))
    log = tmp_path / "sink.log"
    with log.open("wb") as sink_out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sink", "-c", str(config), "--name", "pod-1"],
                                stdout=sink_out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: LISTENING.search(log.read_text()) is not None or proc.poll() is not None, 30, "the line")
        found = LISTENING.search(log.read_text())
        assert found, log.read_text()[-3000:]
        port = int(found.group(1))
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 5, 10, "the results delivered")

        assert http_get(port, "/healthz") == (200, "ok\n")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["content-type"] == CONTENT_TYPE_LATEST
        assert 'vigil_sink_written_results_total{sink="jsonl-0"} 5.0' in metrics.text
        assert 'vigil_pipeline_published_frames_total{stream="lobby"}' in metrics.text  # from Redis at the scrape
        code, text = http_get(port, "/readyz")
        assert code == 200, text
        doc = json.loads(text)
        assert doc["ready"] is True and doc["not_ready"] == [] and doc["consumer"] == "pod-1"
        assert doc["sinks"] == [{"name": "jsonl-0", "rejected_records": 1, "running": True, "delivered": 5,
                                 "rejected": 0, "last_rejection": {"reason": reason, "status": 422,
                                                                   "at": "2023-11-14T22:13:20.000Z"}}]
        assert http_get(port, "/nope") == (404, '{"detail":"Not Found"}')  # the console's error body

        server.stop()  # Redis away: not ready, and /readyz says which server, its password redacted
        code, text = http_get(port, "/readyz")
        assert code == 503 and json.loads(text)["ready"] is False, text
        assert f"Redis redis://:***@127.0.0.1:{server.port}/0 is unavailable" in json.loads(text)["not_ready"][0]
        assert "Redis-Pw-5150" not in text + log.read_text()
        server.start()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 10, "ready again")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        client.close()

