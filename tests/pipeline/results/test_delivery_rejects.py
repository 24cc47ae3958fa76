"""A sink's output that refuses records for good: a real SinkRunner, a real Redis, a real HTTP receiver.

The receiver answers 422 to every batch holding one of certain frames (chosen by content, so a retry of
the same record is refused again). Every other record must reach it once, in order; the refused ones
must be in the results dead-letter with the status and the reason, counted, and delivery must go on.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import VigilConfig, validate_config
from pipeline.core.keys import RESULTS_KEY, STANDALONE, sink_group
from pipeline.ops.metrics import SinkMetrics
from pipeline.results.dead_letter import merge_rejections, read_rejections
from pipeline.results.delivery import SinkRunner
from pipeline.results.sinks import build_sink
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.services import wait_for
from tests.pipeline.results.sinks.records import record

BAD = {3, 17, 18, 33, 45}  # the seq of the records the receiver refuses
SECRET = "s3cret-pw"


def _frame(i: int) -> str:
    return f"{1000 + i}-0"


@pytest.fixture
def clients(clean_redis_url: str) -> Iterator[BusClients]:
    c = BusLayout([clean_redis_url]).connect(2.0)
    yield c
    c.close()


def _config(url: str, port: int) -> VigilConfig:
    return validate_config({
        "redis": {"urls": [url]},
        "streams": [{"id": "cam", "url": "file:///dev/null"}],
        "sinks": [{"type": "webhook", "name": "hook", "url": f"http://user:{SECRET}@127.0.0.1:{port}/hook",
                   "batch_size": 10, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}],
    }, environ={})


def _add(client: redis.Redis, seqs: range) -> None:
    for i in seqs:
        client.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]


def test_refused_records_are_dead_lettered_and_the_others_delivered_in_order(
        clean_redis_url: str, clients: BusClients, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    bad_frames = {_frame(i) for i in BAD}
    metrics = SinkMetrics(["cam"])
    stop = threading.Event()
    caplog.set_level(logging.WARNING)
    with Receiver(refuse=lambda item: item["frame_id"] in bad_frames) as rx:
        cfg = _config(clean_redis_url, rx.port)
        _add(client, range(40))
        with build_sink(cfg.sinks[0]) as sink:
            runner = SinkRunner("hook", sink, cfg.sinks[0], clients, consumer="t", observer=metrics)
            runner.start(stop)
            try:
                assert wait_for(lambda: len(rx.items()) == 36, 20), rx.items()
                assert wait_for(lambda: client.xlen(STANDALONE.results_deadletter) == 4, 5)
                _add(client, range(40, 50))  # delivery goes on after the refusals
                assert wait_for(lambda: len(rx.items()) == 45 and client.xlen(STANDALONE.results_deadletter) == 5,
                                20)
                assert wait_for(lambda: client.xpending(RESULTS_KEY, sink_group("hook"))["pending"] == 0, 5)
            finally:
                stop.set()
                runner.join(5)
    got = [item["frame_id"] for item in rx.items()]
    assert got == [_frame(i) for i in range(50) if i not in BAD]  # each once, in order
    assert all(any(item["frame_id"] in bad_frames for item in body) for body in rx.refused)
    assert sorted(body[0]["frame_id"] for body in rx.refused if len(body) == 1) == sorted(bad_frames)
    dead = [fields for _, fields in client.xrange(STANDALONE.results_deadletter)]
    assert [json.loads(d[b"r.json"])["frame_id"] for d in dead] == [_frame(i) for i in sorted(BAD)]
    for d in dead:
        assert d[b"sink"] == b"hook" and d[b"status"] == b"422" and d[b"r.stream"] == b"cam"
        assert b"HTTP 422" in d[b"reason"] and SECRET.encode() not in d[b"reason"]
    assert metrics.registry.get_sample_value("vigil_sink_rejected_records_total",
                                             {"sink": "hook", "stream": "cam"}) == 5
    assert runner.delivered == 45 and runner.rejected == 5
    summary = merge_rejections(["hook"], [read_rejections(client, STANDALONE)])
    assert summary[0]["name"] == "hook" and summary[0]["rejected_records"] == 5
    last: dict[str, Any] = summary[0]["last_rejection"]
    assert last["status"] == 422 and "HTTP 422" in last["reason"] and SECRET not in last["reason"]
    assert "retrying the same" not in caplog.text and SECRET not in caplog.text
    assert "refused 1 record(s) for good" in caplog.text


def test_a_server_error_is_retried_not_dead_lettered(clean_redis_url: str, clients: BusClients) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    stop = threading.Event()
    with Receiver(fail_first=3) as rx:  # 503 three times: retry later, never dead-letter
        cfg = _config(clean_redis_url, rx.port)
        _add(client, range(5))
        with build_sink(cfg.sinks[0]) as sink:
            runner = SinkRunner("hook", sink, cfg.sinks[0], clients, consumer="t")
            runner.start(stop)
            try:
                assert wait_for(lambda: len(rx.items()) == 5, 10)
            finally:
                stop.set()
                runner.join(5)
    assert [i["seq"] for i in rx.items()] == list(range(5))
    assert client.xlen(STANDALONE.results_deadletter) == 0 and runner.rejected == 0
