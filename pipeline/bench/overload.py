"""`vigil bench overload`: the real path under 50% to 300% of its capacity, measured in one run.

What runs, all on this machine: a real RTSP server (GStreamer, :mod:`pipeline.bench.gst_rtsp_server`)
serving a real H.264 video, looping at its native frame rate, to ``cameras`` cameras, and `vigil run`'s
own components (:class:`~pipeline.ops.runner.LocalPipeline`: an embedded Redis, the Ray Serve
replica(s), the sink worker writing a JSONL file, the ingest worker decoding every camera).

1. **capacity**: every camera samples at the video's frame rate, far more than inference takes; the
   frames/s classified then is the pipeline's capacity here, with every camera decoding;
2. **sweep**: for each offered load L the cameras are reloaded at ``fps = L x capacity / cameras``
   (as an operator changes ``fps``), left ``settle_s`` to settle, then measured for ``seconds``.

The load changes through the cameras' fps, not their number, so every step decodes the same streams:
decoding costs the same at every step, and the only variable is what is offered to inference.

Per step: frames/s classified (the results that reached the JSONL file), frame age p50/p95/p99 (capture
-> result, from those results), max/min of the per-camera shares, drops by reason, the CPU of this
process (ingest and sinks, the replicas excluded) per classified frame, the whole machine's CPU use,
and Redis' memory above its empty baseline next to the bound frames-in-flight x frame size + 20 MB.
At the end the cameras stop, the queues drain, and the accounting identity (published = inferred +
dropped + dead-lettered) is checked per camera, and every classified frame against the JSONL file.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.ingest import self_cpu_s, video_info
from pipeline.bench.model import best_raw_rate
from pipeline.bench.rtsp_server import RtspServer, free_port
from pipeline.core.config import (
    ConsoleConfig,
    InferenceConfig,
    JsonlSinkConfig,
    MetricsConfig,
    RedisConfig,
    StreamConfig,
    VigilConfig,
)
from pipeline.core.errors import VigilError
from pipeline.core.redis_clients import connect
from pipeline.ops.runner import LocalPipeline

DEFAULT_LOADS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
REDIS_SLACK_MB = 20.0  # the target: Redis <= frames in flight x frame size + this
EFFICIENCY_TARGET = 0.7  # the target: the pipeline's capacity >= this x the model's best raw rate here
Samples = dict[str, dict[tuple[str, ...], float]]


@dataclass(frozen=True)
class OverloadOptions:
    model: Path
    video: Path
    cameras: int = 32
    loads: tuple[float, ...] = DEFAULT_LOADS
    seconds: float = 20.0  # measured per step
    settle_s: float = 8.0  # after a step's reload, before its measurement
    batch_size: int = 32
    replicas: int = 1
    ray_cpus: int | None = None


@dataclass(frozen=True)
class Step:
    """The figures of one measured window."""

    load: float  # offered / capacity (0 for the capacity step, whose cameras sample at the video's fps)
    camera_fps: float
    offered_fps: float  # cameras x camera_fps
    published_fps: float  # frames ingest actually put on the bus (adaptive sampling lowers it)
    classified_fps: float
    age_ms: tuple[float, float, float]  # p50, p95, p99
    share_max_min: float  # of per-camera classified frames
    dropped: dict[str, int]  # reason -> frames, pipeline and ingest side
    process_cpu_ms_per_frame: float  # ingest + sinks (this process), per classified frame
    machine_cpu_pct: float  # of all cores
    redis_mb: float  # peak used memory above the empty baseline
    redis_bound_mb: float  # peak frames in flight x frame size + REDIS_SLACK_MB


@dataclass
class OverloadReport:
    cameras: int
    source_fps: float
    capacity_fps: float
    frame_bytes: int
    steps: list[Step] = field(default_factory=list)
    identity_problems: list[str] = field(default_factory=list)  # empty: exact for every camera
    results_lost: int = 0  # classified frames missing from the JSONL file
    model_raw_fps: float = 0.0  # the model alone on these cores at its best batch (0: not measured)
    model_raw_batch: int = 0


@dataclass(frozen=True)
class Verdict:
    name: str  # a short key: capacity, throughput, age, fairness, memory, fresh, identity, delivery
    target: str
    figure: str
    met: bool


def verdicts(report: OverloadReport) -> list[Verdict]:
    """The issue's targets against the measured steps (the capacity step itself is not one of them)."""
    steps = [s for s in report.steps if s.load > 0]
    under = [s for s in steps if s.load < 1]
    over = [s for s in steps if s.load > 1]
    saturating = min((s for s in steps if s.load >= 1), key=lambda s: s.load, default=None)
    out = []
    if report.steps:
        cap = report.steps[0]
        out.append(Verdict("capacity", "the capacity step offers more than inference takes (else add --cameras)",
                           f"{cap.published_fps:.0f} of {cap.offered_fps:.0f} frames/s offered were published",
                           cap.published_fps < 0.9 * cap.offered_fps))
    if saturating is not None and over:
        worst = min(over, key=lambda s: s.classified_fps)
        ratio = worst.classified_fps / saturating.classified_fps if saturating.classified_fps else 0.0
        out.append(Verdict("throughput", f"beyond capacity >= 0.95 x frames/s at {saturating.load:.0%}",
                           f"{ratio:.2f} (lowest at {worst.load:.0%})", ratio >= 0.95))
    if steps:
        worst_age = max(steps, key=lambda s: s.age_ms[1])
        out.append(Verdict("age", "frame age p95 <= 500 ms at every load",
                           f"{worst_age.age_ms[1]:.0f} ms at {worst_age.load:.0%}", worst_age.age_ms[1] <= 500))
        worst_share = max(steps, key=lambda s: s.share_max_min)
        out.append(Verdict("fairness", "max/min per-camera share <= 1.1", f"{worst_share.share_max_min:.2f} at "
                           f"{worst_share.load:.0%}", worst_share.share_max_min <= 1.1))
        worst_mem = max(steps, key=lambda s: s.redis_mb - s.redis_bound_mb)
        out.append(Verdict("memory", f"Redis <= frames in flight x frame size + {REDIS_SLACK_MB:.0f} MB",
                           f"{worst_mem.redis_mb:.1f} MB vs {worst_mem.redis_bound_mb:.1f} MB at {worst_mem.load:.0%}",
                           worst_mem.redis_mb <= worst_mem.redis_bound_mb))
    if under:
        stale = sum(s.dropped.get("stale", 0) for s in under)
        out.append(Verdict("fresh", "under capacity no stale drop", f"{stale} stale", stale == 0))
    if report.model_raw_fps > 0:
        ratio = report.capacity_fps / report.model_raw_fps
        out.append(Verdict("efficiency", f"capacity >= {EFFICIENCY_TARGET} x the model's best raw rate",
                           f"{ratio:.2f} ({report.capacity_fps:.0f} of {report.model_raw_fps:.0f} images/s at batch "
                           f"{report.model_raw_batch})", ratio >= EFFICIENCY_TARGET))
    out.append(Verdict("identity", "published = inferred + dropped + dead-lettered, per camera",
                       "exact" if not report.identity_problems else "; ".join(report.identity_problems[:3]),
                       not report.identity_problems))
    out.append(Verdict("delivery", "every classified frame reached the JSONL sink", f"{report.results_lost} lost",
                       report.results_lost == 0))
    return out


def _streams(opts: OverloadOptions, rtsp: RtspServer, fps: float) -> list[StreamConfig]:
    return [StreamConfig(id=f"cam{i:02d}", url=rtsp.url("cam"), fps=fps) for i in range(opts.cameras)]


def _config(opts: OverloadOptions, rtsp: RtspServer, fps: float, out: Path) -> VigilConfig:
    return VigilConfig(
        streams=_streams(opts, rtsp, fps),
        # Results the sink has delivered are not needed in Redis; 10000 keep it to a few MB.
        redis=RedisConfig(results_maxlen=10_000),
        inference=InferenceConfig(model=str(opts.model), batch_size=opts.batch_size, replicas=opts.replicas,
                                  http_port=free_port()),
        sinks=[JsonlSinkConfig(type="jsonl", path=str(out), rotate_mb=100_000)],
        metrics=MetricsConfig(port=0), console=ConsoleConfig(enabled=False))  # no pictures: measure the pipeline


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine from /proc/stat ((0, 0) where there is none)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _by_reason(samples: Samples) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("vigil_pipeline_dropped_frames_total", "vigil_ingest_dropped_frames_total"):
        for (_stream, reason), v in samples.get(name, {}).items():
            out[reason] = out.get(reason, 0.0) + v
    return out


def _per_camera(samples: Samples, name: str) -> dict[str, float]:
    return {labels[0]: v for labels, v in samples.get(name, {}).items()}


def _in_flight(samples: Samples) -> float:
    return sum(samples.get("vigil_pipeline_queue_frames", {}).values())


class _Results:
    """The JSONL sink's file, read as it grows: the results that really reached a sink."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _step(load: float, camera_fps: float, cameras: int, raw: dict[str, Any], ages: list[float]) -> Step:
    s0, s1, wall = raw["s0"], raw["s1"], raw["wall_s"]

    def delta(name: str) -> dict[str, float]:
        before = _per_camera(s0, name)
        return {k: v - before.get(k, 0.0) for k, v in _per_camera(s1, name).items()}

    inferred = delta("vigil_pipeline_inferred_frames_total")
    published = delta("vigil_ingest_published_frames_total")
    shares = list(inferred.values())
    classified = sum(shares)
    r0 = _by_reason(s0)
    drops = {k: int(v - r0.get(k, 0.0)) for k, v in _by_reason(s1).items() if v - r0.get(k, 0.0) > 0}
    a = np.asarray(ages) if ages else np.full(1, math.nan)
    return Step(load=load, camera_fps=camera_fps, offered_fps=cameras * camera_fps,
                published_fps=sum(published.values()) / wall, classified_fps=classified / wall,
                age_ms=(float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(np.percentile(a, 99))),
                share_max_min=max(shares) / min(shares) if shares and min(shares) > 0 else math.inf,
                dropped=drops, process_cpu_ms_per_frame=1000 * raw["cpu_s"] / max(1.0, classified),
                machine_cpu_pct=100 * raw["machine"], redis_mb=raw["peak_mb"], redis_bound_mb=raw["bound_mb"])


def _wait_drained(pipe: LocalPipeline, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _in_flight(pipe.samples()) and time.monotonic() < deadline:
        time.sleep(0.25)


class _Watch:
    """The running pipeline and what the bench reads from it: metrics, Redis' memory, the JSONL file."""

    def __init__(self, opts: OverloadOptions, pipe: LocalPipeline, rtsp: RtspServer, out: Path) -> None:
        assert pipe.ingest is not None
        self.opts, self.pipe, self.rtsp, self.out = opts, pipe, rtsp, out
        self.frame_bytes = max(pipe.ingest.frames.frame_bytes(s) for s in pipe.cfg.streams)
        self.redis = connect(pipe.cfg.redis.urls[0], pipe.cfg.redis.socket_timeout_s)
        self.baseline_b = self._used_b()  # before any camera published a frame
        self.results = _Results(out)

    def _used_b(self) -> int:
        return int(self.redis.info("memory")["used_memory"])

    def _wait_live(self, timeout_s: float = 180.0) -> None:
        """Until every camera receives frames (OpenCV opens captures one at a time: about 0.2 s each here)."""
        assert self.pipe.ingest is not None
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [c["id"] for c in self.pipe.ingest.status()["cameras"] if c["state"] != "live"]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise VigilError(f"{len(waiting)} camera(s) not live after {timeout_s:.0f} s ({', '.join(waiting[:5])}"
                                 "...): is the RTSP server overloaded? Try fewer --cameras")
            time.sleep(0.25)

    def run_at(self, load: float, camera_fps: float) -> Step:
        """Reload the cameras at ``camera_fps``, let them settle, measure one window."""
        assert self.pipe.ingest is not None
        streams = _streams(self.opts, self.rtsp, camera_fps)
        self.pipe.ingest.reload(self.pipe.cfg.model_copy(update={"streams": streams}))
        self._wait_live()
        time.sleep(self.opts.settle_s)
        self.results.read_new()  # everything before the window
        s0, cpu0, m0, t0 = self.pipe.samples(), self_cpu_s(), _machine_jiffies(), time.time()
        peak_b, peak_flight = 0, 0.0
        while time.time() - t0 < self.opts.seconds:
            time.sleep(0.5)
            peak_b = max(peak_b, self._used_b() - self.baseline_b)
            peak_flight = max(peak_flight, _in_flight(self.pipe.samples()))
        s1, cpu1, m1, t1 = self.pipe.samples(), self_cpu_s(), _machine_jiffies(), time.time()
        time.sleep(1.0)  # results of frames classified in the window, still on their way to the sink
        ages = [float(r["latency_ms"]["total"]) for r in self.results.read_new()
                if t0 <= float(r["inference_ts"]) <= t1]
        return _step(load, camera_fps, self.opts.cameras, {
            "s0": s0, "s1": s1, "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0,
            "machine": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), "peak_mb": peak_b / 2**20,
            "bound_mb": peak_flight * self.frame_bytes / 2**20 + REDIS_SLACK_MB}, ages)

    def check_identity(self, report: OverloadReport) -> None:
        """Stop the cameras, drain the queues; check the identity per camera and that no result was lost."""
        assert self.pipe.ingest is not None
        self.pipe.ingest.reload(self.pipe.cfg.model_copy(update={"streams": []}))
        _wait_drained(self.pipe)
        totals = self.pipe.camera_totals()
        for stream_id, t in sorted(totals.items()):
            if t["published"] != t["classified"] + t["dropped"] + t["dead_lettered"]:
                report.identity_problems.append(
                    f"{stream_id}: published {t['published']} != inferred {t['classified']} + dropped {t['dropped']} + "
                    f"dead-lettered {t['dead_lettered']}")
        total, delivered, every_line = sum(t["classified"] for t in totals.values()), 0, _Results(self.out)
        deadline = time.monotonic() + 30
        while delivered < total and time.monotonic() < deadline:
            delivered += len(every_line.read_new())
            time.sleep(0.25)
        report.results_lost = total - delivered

    def close(self) -> None:
        self.redis.close()


@contextmanager
def _running(opts: OverloadOptions, camera_fps: float) -> Iterator[_Watch]:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-overload-") as tmp, \
            RtspServer({"cam": opts.video}) as rtsp:
        out = Path(tmp) / "results.jsonl"
        with LocalPipeline(_config(opts, rtsp, camera_fps, out), ray_cpus=opts.ray_cpus) as pipe:
            watch = _Watch(opts, pipe, rtsp, out)
            try:
                yield watch
            finally:
                watch.close()


def bench_overload(opts: OverloadOptions, progress: Callable[[Step], object] = print) -> OverloadReport:
    """Measure capacity, then each of ``opts.loads``; ``progress`` gets each step as it ends."""
    source_fps, _ = video_info(opts.video)
    raw = best_raw_rate(opts.model, opts.batch_size)  # before anything else runs: the model alone on these cores
    with _running(opts, source_fps) as watch:
        capacity = watch.run_at(0.0, source_fps)
        progress(capacity)
        report = OverloadReport(opts.cameras, source_fps, capacity.classified_fps, watch.frame_bytes, [capacity],
                                model_raw_fps=raw.images_per_s, model_raw_batch=raw.batch_size)
        for load in opts.loads:
            step = watch.run_at(load, min(source_fps, load * report.capacity_fps / opts.cameras))
            report.steps.append(step)
            progress(step)
        watch.check_identity(report)
    return report
