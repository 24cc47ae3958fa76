"""The dashboard and the alert rules against a real Prometheus scraping a running `vigil run`.

One stack for the whole module: a GStreamer RTSP server serving the shared videos as two cameras,
`vigil run`'s LocalPipeline (embedded Redis, Ray Serve, sink and ingest workers), and Debian's
Prometheus scraping the pipeline's /metrics every second and evaluating deploy/prometheus/alerts.yaml
every second. The last test stops the RTSP server, so it stays last in this file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.core.config import validate_config
from pipeline.ops.runner import LocalPipeline
from tests.deploy.promql import (
    RULES,
    Query,
    alert_rule,
    dashboard_queries,
    duration_s,
    rule_queries,
    split_alert,
)
from tests.fixtures.prometheus import PrometheusServer, ScrapeTarget
from tests.fixtures.services import RtspServer, wait_for

REPO = Path(__file__).resolve().parents[2]
STREAMS = ("slides", "bikes")
JOB = "vigil-ingest"  # the job name the PodMonitor gives the ingest pods (jobLabel app.kubernetes.io/name)


@dataclass
class Stack:
    rtsp: RtspServer
    pipeline: LocalPipeline
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, video_dir: Path, shared_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("observability")
    rtsp = RtspServer({"slideshow": video_dir / "slideshow.mp4", "bikes": video_dir / "bikes.mp4"}).start()
    cfg = validate_config({
        "streams": [{"id": "slides", "url": rtsp.url("slideshow"), "fps": 4},
                    {"id": "bikes", "url": rtsp.url("bikes"), "fps": 4}],
        "ingest": {"open_timeout_s": 5, "read_timeout_s": 2, "stall_timeout_s": 2, "backoff_base_s": 0.5,
                   "backoff_cap_s": 2},
        "inference": {"model": str(shared_model), "device": "cpu", "batch_size": 8, "batch_window_ms": 20,
                      "replica_cpus": 0.5, "http_port": 0, "claim_idle_s": 5},
        "sinks": [{"type": "jsonl", "path": str(work / "results.jsonl")}],
        "metrics": {"port": 0}, "console": {"port": 0},
    }, environ={})
    pipeline = LocalPipeline(cfg, ray_cpus=2)
    prometheus: PrometheusServer | None = None
    try:
        pipeline.__enter__()
        prometheus = PrometheusServer(work / "prometheus", [ScrapeTarget(JOB, f"127.0.0.1:{pipeline.metrics_port}")],
                                      rule_files=[RULES]).start()
        prom = prometheus
        # Results for both cameras, scraped a few times: every rate() has samples to work on.
        assert wait_for(lambda: len(prom.query('vigil_pipeline_inferred_frames_total > 0')) == len(STREAMS), 120), \
            f"no results reached Prometheus: {prom.log()}"
        time.sleep(4)
        yield Stack(rtsp, pipeline, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        pipeline.__exit__(None, None, None)
        rtsp.kill()


def _problems(prom: PrometheusServer, queries: list[Query]) -> list[str]:
    problems = []
    for q in queries:
        result = prom.query(q.expr)
        if not result:
            problems.append(f"{q.where}: no series for {q.expr}")
        elif q.per_camera:
            streams = {s["metric"].get("stream") for s in result}
            if None in streams or not set(STREAMS) <= streams:
                problems.append(f"{q.where}: series without the stream label or a camera missing "
                                f"({sorted(map(str, streams))}): {q.expr}")
    return problems


def _eventually_no_problems(prom: PrometheusServer, queries: list[Query], timeout_s: float = 45) -> list[str]:
    """Histograms and rates need a few scrapes after the first results: retry until all answer."""
    problems = _problems(prom, queries)
    deadline = time.monotonic() + timeout_s
    while problems and time.monotonic() < deadline:
        time.sleep(1)
        problems = _problems(prom, queries)
    return problems


def test_every_dashboard_query_returns_series_per_camera(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    assert any(q.per_camera for q in queries) and any(not q.per_camera for q in queries)
    problems = _eventually_no_problems(stack.prometheus, queries)
    assert problems == [], "\n".join(problems)


def test_every_rule_expression_returns_series_and_evaluates_cleanly(stack: Stack) -> None:
    queries = rule_queries()
    problems = _eventually_no_problems(stack.prometheus, queries)
    assert problems == [], "\n".join(problems)
    # Prometheus itself loaded and evaluated every rule of the file without an error ...
    rules = stack.prometheus.rules()
    assert len(rules) == len(queries)
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []
    # ... and a healthy pipeline fires none of the alerts.
    firing = [a for a in stack.prometheus.alerts() if a["state"] == "firing"]
    assert firing == []


def test_metrics_reference_lists_every_exported_metric_and_label(stack: Stack) -> None:
    text = httpx.get(f"http://127.0.0.1:{stack.pipeline.metrics_port}/metrics", timeout=10).text
    doc = (REPO / "docs" / "metrics.md").read_text()
    # `<name>_created` families (prometheus_client's creation timestamps) are covered by one note.
    families = {name: kind for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, re.MULTILINE)
                if not name.endswith("_created")}
    # prometheus_client names a counter's family with its `_total` suffix in the text format.
    assert {"vigil_ingest_camera_state", "vigil_pipeline_queue_frames", "vigil_replica_batches_total",
            "vigil_sink_frame_age_seconds"} <= set(families)
    missing = []
    for name in families:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}`")), None)
        if row is None:
            missing.append(name)
            continue
        labels = set()
        for m in re.finditer(rf"^{name}(?:_bucket|_sum|_count)?\{{([^}}]*)\}}", text, re.MULTILINE):
            labels |= set(re.findall(r'(\w+)="', m.group(1)))
        labels -= {"le"}
        missing += [f"{name} label {label}" for label in sorted(labels) if f"`{label}`" not in row]
    assert missing == [], "docs/metrics.md lacks: " + ", ".join(missing)


def test_camera_down_alert_fires_within_its_for_window_when_the_rtsp_server_stops(stack: Stack) -> None:
    prom = stack.prometheus
    rule = alert_rule("VigilCameraDown")
    signal, _, _ = split_alert(rule["expr"])
    for_s = duration_s(rule["for"])
    assert prom.query(rule["expr"]) == [], "a camera is down before the server stops"
    assert {s["metric"]["stream"] for s in prom.query(signal)} == set(STREAMS)

    stack.rtsp.kill()

    def down() -> set[str]:
        return {s["metric"]["stream"] for s in prom.query(rule["expr"])}

    assert wait_for(lambda: down() == set(STREAMS), for_s), f"camera-down not true within {for_s:g}s: {down()}"
    # Prometheus's own rule evaluation agrees: the alert is pending (or already firing) for each camera.
    assert wait_for(lambda: {a["labels"]["stream"] for a in prom.alerts() if a["labels"]["alertname"] ==
                          "VigilCameraDown" and a["state"] in ("pending", "firing")} == set(STREAMS), 10)
