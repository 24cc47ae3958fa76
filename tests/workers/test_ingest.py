"""`vigil ingest` as a process: signals, reload, exit code, and no credential anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.keys import frames_key
from tests.fixtures.services import RedisServer, RtspServer
from tests.pipeline.ops.ingest_helpers import FAST, http_get, wait_until


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


