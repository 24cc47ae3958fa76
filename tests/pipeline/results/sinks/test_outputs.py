"""JSONL rotation, webhook retries against a real HTTP server, plugin loading."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pipeline.core.backoff import Backoff
from pipeline.core.config import JsonlSinkConfig, PluginSinkConfig, WebhookSinkConfig
from pipeline.core.errors import ConfigError, SinkError, SinkRejectedError
from pipeline.results.sinks import build_sink
from pipeline.results.sinks.files import RotatingJsonl
from pipeline.results.sinks.webhook import WebhookPoster
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.services import free_port
from tests.pipeline.results.sinks.records import record


def test_jsonl_writes_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.jsonl"
    cfg = JsonlSinkConfig(type="jsonl", path=str(path), rotate_mb=0.001, keep=2)  # rotate at ~1 KB
    with build_sink(cfg) as sink:
        for i in range(12):
            sink.write([record("cam", "cat", i=i)])
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    lines = [json.loads(line) for f in ("r.jsonl.2", "r.jsonl.1", "r.jsonl") for line in
             (path.parent / f).read_text().splitlines()]
    assert lines[-1]["seq"] == 11 and lines[-1]["top_k"][0]["label"] == "cat"
    assert all(set(doc) >= {"stream", "frame_id", "capture_ts", "model", "scene", "latency_ms"} for doc in lines)


def test_jsonl_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkRejectedError, match="cannot open") as err:
        build_sink(JsonlSinkConfig(type="jsonl", path=str(blocker / "r.jsonl"))).__enter__()
    assert not err.value.split  # every record would fail alike: no halves


def test_jsonl_path_that_became_a_directory_is_refused_for_good(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    out = RotatingJsonl(path, rotate_bytes=10, keep=2)
    out.open()
    out.write_lines([{"a": 1}])  # rotated: r.jsonl.1, and a new r.jsonl
    out.close()  # as after a rotation that could not open the new file
    path.unlink()
    path.mkdir()  # a deployment mistake: a volume mounted where the file was
    with pytest.raises(SinkRejectedError, match="Is a directory") as err:
        out.write_lines([{"a": 2}])
    assert not err.value.split and str(path) in err.value.reason


def test_jsonl_full_disk_is_retried_not_refused() -> None:
    out = RotatingJsonl(Path("/dev/full"), rotate_bytes=1 << 40, keep=1)  # every write: ENOSPC
    out.open()
    with pytest.raises(SinkError, match="No space left") as err:
        out.write_lines([{"a": 1}])
    assert not isinstance(err.value, SinkRejectedError)
    out.close()


def test_webhook_retries_503_then_delivers() -> None:
    with Receiver(fail_first=2) as rx:
        cfg = WebhookSinkConfig(type="webhook", url=rx.url, backoff_base_s=0.01)
        with build_sink(cfg) as sink:
            sink.write([record("cam", "cat", i=i) for i in range(3)])
        assert [item["seq"] for item in rx.items()] == [0, 1, 2]


def test_webhook_waits_for_a_server_that_comes_up_later() -> None:
    port = free_port()
    poster = WebhookPoster(f"http://127.0.0.1:{port}/hook", timeout_s=1, backoff=Backoff(0.05, 0.2))
    poster.open()
    done = threading.Event()
    threading.Thread(target=lambda: (poster.post([{"a": 1}]), done.set()), daemon=True).start()
    time.sleep(1.0)
    assert not done.is_set() and poster.retries >= 2
    with Receiver(port=port) as rx:
        assert done.wait(5)
        assert rx.items() == [{"a": 1}]
    poster.close()


@pytest.mark.parametrize("status", [400, 413, 422])
def test_webhook_4xx_is_refused_for_good_with_its_status(status: int) -> None:
    with Receiver(refuse=lambda item: True, refuse_status=status) as rx:
        poster = WebhookPoster(rx.url, timeout_s=1, backoff=Backoff(0.5, 30.0))
        poster.open()
        with pytest.raises(SinkRejectedError, match=f"rejected a batch of 1: HTTP {status}") as err:
            poster.post([{"a": 1}])
        poster.close()
    assert err.value.status == status and err.value.split and len(rx.refused) == 1  # asked once, not retried


@pytest.mark.parametrize("status", [408, 429])
def test_webhook_408_and_429_are_retried(status: int) -> None:
    answers = [status]
    with Receiver(refuse=lambda item: bool(answers and answers.pop()), refuse_status=status) as rx:
        cfg = WebhookSinkConfig(type="webhook", url=rx.url, backoff_base_s=0.01)
        with build_sink(cfg) as sink:
            sink.write([record("cam", "cat")])
        assert len(rx.refused) == 1 and len(rx.items()) == 1


class _ListSink:
    def __init__(self, cfg: PluginSinkConfig, options: dict[str, object]) -> None:
        self.options = options
        self.got: list[object] = []

    def __enter__(self) -> _ListSink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, records: list[object]) -> None:
        self.got.extend(records)


def make_list_sink(cfg: PluginSinkConfig, options: dict[str, object]) -> _ListSink:
    return _ListSink(cfg, options)


def test_plugin_sink_is_loaded_by_name() -> None:
    cfg = PluginSinkConfig(type="plugin", factory=f"{__name__}:make_list_sink", options={"k": 1})
    sink = build_sink(cfg)
    assert isinstance(sink, _ListSink) and sink.options == {"k": 1}
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_sink(PluginSinkConfig(type="plugin", factory="no.such.module:thing"))
