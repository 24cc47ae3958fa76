"""The sink worker on a real Redis: independent sinks, a webhook down for 10 s gets everything after."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from pipeline.core.classification import FrameClassification, Label
from pipeline.core.config import validate_config
from pipeline.core.keys import RESULTS_KEY
from pipeline.ops.sink_service import SinkService
from pipeline.results.record import ResultRecord
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.services import free_port, wait_for
from tests.pipeline.results.sinks.records import record


def test_webhook_down_10s_gets_all_results_and_jsonl_is_not_stalled(clean_redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    port = free_port()
    out = tmp_path / "results.jsonl"
    cfg = validate_config({
        "redis": {"urls": [clean_redis_url]},
        "sinks": [{"type": "jsonl", "path": str(out)},
                  {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "batch_size": 7,
                   "backoff_base_s": 0.2, "backoff_cap_s": 1.0}],
    }, environ={})
    first = [record("cam", "cat", i=i) for i in range(20)]
    for r in first:
        client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
    with SinkService(cfg, consumer="test") as worker:
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 20, 10)
        later = [record("cam", "dog", i=i) for i in range(20, 30)]
        for r in later:  # results keep coming while the webhook is down
            client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
        assert wait_for(lambda: len(out.read_text().splitlines()) == 30, 10)
        time.sleep(10 - 0.5)  # the webhook server is down for 10 s in all
        with Receiver(port=port) as rx:
            assert wait_for(lambda: len({i["frame_id"] for i in rx.items()}) == 30, 20)
            got = [i["frame_id"] for i in rx.items()]
        assert sorted(set(got)) == sorted(r.frame_id for r in first + later)
        assert len(got) == 30  # no duplicates: nothing was half-delivered here
        webhook = next(r for r in worker.runners if r.name == "webhook-1")
        assert webhook.delivered == 30
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["seq"] for d in lines] == list(range(30))


def test_restarted_worker_redelivers_unacknowledged(clean_redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    cfg = validate_config({"redis": {"urls": [clean_redis_url]},
                           "sinks": [{"type": "jsonl", "path": str(tmp_path / "a.jsonl")}]}, environ={})
    for i in range(5):
        client.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]
    # A previous worker took the 5 records and died before acknowledging them.
    client.xgroup_create(RESULTS_KEY, "vigil-sink-jsonl-0", id="0")
    client.xreadgroup("vigil-sink-jsonl-0", "test", {RESULTS_KEY: ">"}, count=10)
    with SinkService(cfg, consumer="test"):
        assert wait_for(lambda: (tmp_path / "a.jsonl").exists()
                        and len((tmp_path / "a.jsonl").read_text().splitlines()) == 5, 10)
    assert client.xpending(RESULTS_KEY, "vigil-sink-jsonl-0")["pending"] == 0


def test_a_worker_under_a_new_name_takes_over_what_the_dead_one_left(clean_redis_url: str, tmp_path: Path) -> None:
    # On Kubernetes a restarted sink pod gets a new host name, so it never reads the old one's pending entries.
    client = redis.Redis.from_url(clean_redis_url)
    out = tmp_path / "a.jsonl"
    cfg = validate_config({"redis": {"urls": [clean_redis_url]},
                           "sinks": [{"type": "jsonl", "path": str(out), "claim_idle_s": 1}]}, environ={})
    for i in range(10):
        client.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]
    client.xgroup_create(RESULTS_KEY, "vigil-sink-jsonl-0", id="0")
    client.xreadgroup("vigil-sink-jsonl-0", "sink-pod-old", {RESULTS_KEY: ">"}, count=10)  # then it died
    with SinkService(cfg, consumer="sink-pod-new"):
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 10, 15)
        assert wait_for(lambda: [c["name"] for c in client.xinfo_consumers(RESULTS_KEY, "vigil-sink-jsonl-0")]
                        == [b"sink-pod-new"], 10)  # the dead consumer is gone
    assert sorted(json.loads(x)["seq"] for x in out.read_text().splitlines()) == list(range(10))
    assert client.xpending(RESULTS_KEY, "vigil-sink-jsonl-0")["pending"] == 0


def gate_record(i: int, state: str) -> ResultRecord:
    answers = {"gate": Label(1 if state == "open" else 0, state, 0.95)}
    return replace(record("drive", "cat", i=i), zone="gate",
                   classification=FrameClassification([], None, answers))


def test_classifier_states_and_since_survive_a_restart_of_the_sink_worker(clean_redis_url: str,
                                                                          tmp_path: Path) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    events = tmp_path / "events.jsonl"
    cfg = validate_config({
        "redis": {"urls": [clean_redis_url]},
        "streams": [{"id": "drive", "url": "rtsp://127.0.0.1:1/x", "zones": [{"id": "gate", "xyxy": [0, 0, 1, 1]}]}],
        "classifiers": [{"id": "gate", "model": "gate.onnx", "kind": "state", "classes": ["closed", "open"],
                         "zones": ["gate"], "confirm": 3}],
        "sinks": [{"type": "events", "path": str(events)}]}, environ={})

    def state_events() -> list[dict[str, Any]]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == "state_changed"]

    for i in range(4):  # open, settled at the third
        client.xadd(RESULTS_KEY, gate_record(i, "open").to_fields())  # type: ignore[arg-type]
    with SinkService(cfg, consumer="first"):
        assert wait_for(lambda: len(state_events()) == 1, 10)
    for i in range(4, 6):  # while no sink worker runs: two of the three closed results it needs
        client.xadd(RESULTS_KEY, gate_record(i, "closed").to_fields())  # type: ignore[arg-type]
    with SinkService(cfg, consumer="second"):
        client.xadd(RESULTS_KEY, gate_record(6, "closed").to_fields())  # type: ignore[arg-type]
        assert wait_for(lambda: len(state_events()) == 2, 10)
    first, second = state_events()
    assert (first["from"], first["to"], first["since"]) == (None, "open", 1002.0)  # record i's capture time 1000 + i
    # The restarted worker knew the state, its since and the run under way: no second "from null".
    assert (second["from"], second["to"], second["since"]) == ("open", "closed", 1006.0)
    saved = json.loads(client.hget("vigil:states:events-0", "drive/gate/gate"))  # type: ignore[arg-type]
    assert (saved["state"], saved["since"]) == ("closed", 1006.0)
