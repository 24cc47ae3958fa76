"""The ingest worker's HTTP app on the shared stack: routes, status codes, content types, error bodies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from pipeline.ops.ingest_http import build_ingest_app
from pipeline.ops.metrics import CONTENT_TYPE_LATEST
from pipeline.web.server import ThreadedServer
from tests.pipeline.ops.ingest_helpers import http_get


class FakeWorker:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        Counter("vigil_ingest_test_frames", "a counter", registry=self.registry).inc()
        self.ready = False
        self.accepted: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"ready": self.ready, "cameras": []}

    def accept_view(self, stream_id: str) -> bool:
        self.accepted.append(stream_id)
        return stream_id == "gate"


def post(port: int, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        exc.close()
        return exc.code, body


def test_routes_codes_and_error_bodies() -> None:
    worker = FakeWorker()
    server = ThreadedServer("ingest-test", "127.0.0.1", 0)
    server.start(build_ingest_app(worker))
    try:
        port = server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST  # what Prometheus negotiates
            assert b"vigil_ingest_test_frames_total 1.0" in resp.read()
        assert http_get(port, "/healthz") == (200, "ok\n")
        code, body = http_get(port, "/readyz")
        assert code == 503 and json.loads(body) == {"ready": False, "cameras": []}
        worker.ready = True
        assert http_get(port, "/readyz")[0] == 200
        assert post(port, "/cameras/gate/accept-view") == (200, {"accepted_view": "gate"})
        assert post(port, "/cameras/nope/accept-view") == (404, {"detail": "no camera 'nope' here"})
        assert http_get(port, "/nope")[0] == 404
        assert worker.accepted == ["gate", "nope"]
    finally:
        server.stop()
    assert server.port == 0
