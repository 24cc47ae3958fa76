"""A state classifier end to end: "is the gate open?", trained here, answered in a zone of a real camera.

The camera (real GStreamer RTSP server) shows the bikes footage with a region that is one photograph
("open"), another ("closed") or covered in black, 2 s each (:data:`tests.fixtures.media.GATE_SCRIPT`). The
test trains a head on the shared backbone from that region's crops (`models.finetune`, as `vigil models
finetune` does), then runs `vigil run`'s LocalPipeline (embedded Redis, Ray Serve, the shared model) with
the zone and the classifier: the state follows the script within `confirm` samples, is `unknown` while the
region is covered, the whole picture keeps its ImageNet labels, the accounting is exact per camera and
zone, and a real mosquitto holds the retained state and the Home Assistant discovery sensor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.finetune import FinetuneOptions, finetune
from pipeline.core.config import validate_config
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.classifiers import GATE
from tests.fixtures.mqtt import Mosquitto, Subscriber
from tests.fixtures.services import RtspServer, wait_for
from tests.pipeline.ops.test_runner import drained, read_results
from tests.pipeline.ops.test_zones import zone_counts

CONFIRM, MIN_SCORE, FPS = 3, 0.8, 5
CYCLE = ["open", "closed", "unknown", "open", "closed"]  # the state through one loop of the video


def config(url: str, head: Path, model: Path, out: Path, broker: Mosquitto) -> Any:
    return validate_config({
        "streams": [{"id": "drive", "url": url, "fps": FPS, "zones": [GATE.model_dump(exclude_none=True)]}],
        "classifiers": [{"id": "gate", "model": str(head), "kind": "state", "classes": ["closed", "open"],
                         "zones": ["gate"], "min_score": MIN_SCORE, "confirm": CONFIRM}],
        "ingest": {"open_timeout_s": 5, "read_timeout_s": 2, "stall_timeout_s": 2, "backoff_base_s": 0.5,
                   "backoff_cap_s": 2},
        "inference": {"model": str(model), "device": "cpu", "batch_size": 16, "batch_window_ms": 20,
                      "replica_cpus": 0.5, "http_port": 0, "claim_idle_s": 5},
        "sinks": [{"type": "jsonl", "path": str(out / "results.jsonl")},
                  {"type": "events", "path": str(out / "events.jsonl")},
                  {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "hysteresis": 3}],
        "metrics": {"port": 0}, "console": {"port": 0},
    }, environ={})


def state_changes(out: Path) -> list[dict[str, Any]]:
    """The classifier's state_changed events (a camera's own state changes carry no ``classifier``)."""
    return [e for e in read_results(out / "events.jsonl") if e["event"] == "state_changed" and "classifier" in e]


def inverted_head(head: Path, model: Path, out: Path) -> Path:
    """The gate's head trained again with its two classes' pictures swapped: a new version that says the opposite."""
    data = head.parent / "data"
    for label, other in (("open", "closed"), ("closed", "open")):
        (out / "inverted" / label).mkdir(parents=True)
        for f in (data / other).iterdir():
            (out / "inverted" / label / f.name).write_bytes(f.read_bytes())
    finetune(model, out / "inverted", out / "inverted.onnx", FinetuneOptions(augment_copies=1, progress=False))
    return out / "inverted.onnx"


def observed(r: dict[str, Any]) -> str:
    answer = r["classifiers"]["gate"]
    return answer["label"] if answer["score"] >= MIN_SCORE else "unknown"


def test_a_gate_state_classifier_follows_the_gate_and_says_unknown_when_covered(
        tmp_path: Path, gate: tuple[Path, Path, list[np.ndarray]], rtsp_factory: Callable[..., RtspServer],
        shared_model: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    video, head, frames = gate
    broker = mosquitto_factory()
    states = Subscriber(broker, ["vigil/drive/gate/gate", "homeassistant/sensor/vigil_drive_gate_gate/config"])
    server = rtsp_factory({"drive": video})
    inverted = inverted_head(head, shared_model, tmp_path)
    with LocalPipeline(config(server.url("drive"), head, shared_model, tmp_path, broker), ray_cpus=2) as pipeline:
        assert wait_for(lambda: len(state_changes(tmp_path)) >= 6, 150)
        assert wait_for(lambda: len(states.on("vigil/drive/gate/gate")) >= 5, 30)
        # Hot swap: a new version of the classifier, trained with the classes the other way round, while frames flow.
        before = len(state_changes(tmp_path))
        pipeline.swap_classifier("gate", inverted)
        swapped_at = len(state_changes(tmp_path))
        assert wait_for(lambda: len(state_changes(tmp_path)) >= swapped_at + 6, 150)
        server.kill()
        assert wait_for(lambda: drained(pipeline.metrics_port, ["drive"]), 60)
        counts = zone_counts(pipeline.metrics_port, "drive")
        metrics = httpx.get(f"http://127.0.0.1:{pipeline.metrics_port}/metrics", timeout=10).text
    unique = {(r["frame_id"], r["zone"]): r for r in read_results(tmp_path / "results.jsonl")}  # at-least-once
    results = sorted(unique.values(), key=lambda r: (r["seq"], r["zone"]))
    gate_results = [r for r in results if r["zone"] == "gate"]
    everything = state_changes(tmp_path)
    events, after = everything[:before], everything[swapped_at + 2:]

    # The state follows the script: open, closed, unknown (covered), open, closed, again and again; the swapped
    # version (its classes the other way round) from the next frames on: every covered spell now follows "open".
    changes = [e["to"] for e in events]  # the first one comes from null, anywhere in the loop
    later = [e["to"] for e in after]
    assert "unknown" in later[1:] and all(later[i - 1] == "open" for i in range(1, len(later)) if later[i] == "unknown")
    assert all(changes[i - 1] == "closed" for i in range(1, len(changes)) if changes[i] == "unknown"), changes
    # Result by result: what each gate crop showed, from its own ImageNet label (to ImageNet the photographs are a
    # macaw and a packet, the covered region a matchstick): the head says open / closed / nothing sure, and the
    # swapped version the opposite, from one batch to the next.
    shown = {"macaw": "open", "packet": "closed", "matchstick": "unknown"}
    flip = {"open": "closed", "closed": "open", "unknown": "unknown"}
    pairs = [(shown[r["top_k"][0]["label"]], observed(r)) for r in gate_results if r["top_k"][0]["label"] in shown]
    swap = next(i for i, (s, o) in enumerate(pairs) if s != "unknown" and o == flip[s])
    old, new = pairs[:swap], pairs[swap + 16:]  # a batch of margin: lanes finish the batch they hold
    assert len(old) >= 30 and sum(s == o for s, o in old) >= 0.97 * len(old), old
    assert len(new) >= 30 and sum(flip[s] == o for s, o in new) >= 0.97 * len(new), new
    assert {s for s, _ in old} == {s for s, _ in new} == {"open", "closed", "unknown"}
    assert len(changes) >= 6 and any(changes[1:] == ((CYCLE[s:] + CYCLE[:s]) * 4)[:len(changes) - 1]
                                     for s in range(len(CYCLE))), changes
    assert all(e["zone"] == "gate" and e["classifier"] == "gate" and e["stream"] == "drive" for e in events)
    # Each switch within `confirm` samples of the first result that saw the new state.
    seen = [observed(r) for r in gate_results]
    index = {r["frame_id"]: i for i, r in enumerate(gate_results)}
    for e in events[1:]:
        at = first = index[e["frame_id"]]
        while first > 0 and seen[first - 1] == e["to"]:
            first -= 1
        assert at - first == CONFIRM - 1, (e, seen[max(0, first - 3):at + 1])
    # Only the gate zone has the classifier; the whole picture keeps today's ImageNet labels.
    assert all("gate" not in r["classifiers"] for r in results if r["zone"] == "full")
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu")) as plain:
        offline = plain.classify(np.stack([bgr_to_rgb(resize(f, 224, 224)) for f in frames]))
    labels = {offline.frame(i).top1.name for i in range(len(frames))}  # type: ignore[union-attr]
    full = [r for r in results if r["zone"] == "full"]
    assert len(full) >= 50 and all(r["top_k"][0]["label"] in labels and r["scene"] for r in full)
    # Exact accounting per camera and zone.
    for zone in ("full", "gate"):
        assert counts["published_crops", zone] == counts["inferred_crops", zone] + counts["dropped_crops", zone] \
            + counts["dead_lettered_crops", zone] > 0, (zone, dict(counts))
    last = everything[-1]["to"]
    # (the text format writes labels in name order)
    assert f'vigil_classifier_state{{classifier="gate",state="{last}",stream="drive",zone="gate"}} 1.0' in metrics
    assert 'zone="full"' not in "".join(line for line in metrics.splitlines() if "classifier_state" in line)
    assert re.search(r'^vigil_replica_classifier_latency_seconds_count\{classifier="gate",replica="[^"]+"\} [1-9]',
                     metrics, re.MULTILINE), "no per-classifier latency"
    # MQTT: the retained state (a new subscriber gets it) and the Home Assistant sensor.
    late = Subscriber(broker, ["vigil/drive/gate/gate", "homeassistant/sensor/vigil_drive_gate_gate/config"])
    assert wait_for(lambda: late.on("vigil/drive/gate/gate") and late.on(
        "homeassistant/sensor/vigil_drive_gate_gate/config"), 10)
    retained = late.on("vigil/drive/gate/gate")[-1].json()
    assert retained["state"] == everything[-1]["to"] and retained["since"] == pytest.approx(everything[-1]["since"])
    sensor = late.on("homeassistant/sensor/vigil_drive_gate_gate/config")[-1].json()
    assert sensor["state_topic"] == "vigil/drive/gate/gate" and sensor["value_template"] == "{{ value_json.state }}"
    assert [json.loads(m.payload)["state"] for m in states.on("vigil/drive/gate/gate")][:len(changes)] == changes
    states.close()
    late.close()
