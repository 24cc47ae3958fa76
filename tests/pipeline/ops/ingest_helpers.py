"""Helpers shared by the ingest service and `vigil ingest` process tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.bus.wire import FrameMessage, decode_frame
from pipeline.core.config import VigilConfig, validate_config
from pipeline.core.keys import frames_key
from tests.fixtures.services import RedisServer, wait_for

FAST = {"open_timeout_s": 1.5, "read_timeout_s": 1.5, "stall_timeout_s": 1.5, "backoff_base_s": 0.2,
        "backoff_cap_s": 1.0}
UNITS = ("_total", "_seconds", "_seconds_bucket", "_seconds_count", "_seconds_sum", "_created", "_up",
         "_frames_per_second", "_state", "_ratio", "_variance", "_health")  # _health: 0/1 per condition


def make_config(streams: list[dict[str, Any]], redis_url: str, **extra: Any) -> VigilConfig:
    doc = {"streams": streams, "redis": {"urls": [redis_url], "socket_timeout_s": 1.0, **extra.get("redis", {})},
           "ingest": {**FAST, **extra.get("ingest", {})}, "metrics": {"port": 0}}
    return validate_config(doc)


def read_stream(server: RedisServer, stream_id: str) -> list[FrameMessage]:
    return [decode_frame(f) for _, f in server.client().xrange(frames_key(stream_id))]


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


def scrape(port: int) -> dict[str, list[Any]]:
    _, text = http_get(port, "/metrics")
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


