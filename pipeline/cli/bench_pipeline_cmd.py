"""`vigil bench pipeline`: sustained pipeline throughput as a ratio of the raw runtime, and frame age."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

if TYPE_CHECKING:  # the benches import Ray Serve (and gRPC): only when one runs, never at `vigil run`'s start
    from pipeline.bench.pipeline import PipelineBenchOptions
    from pipeline.bench.zones import Head

from pipeline.cli.options import batch_size_option, json_option, model_option, ray_cpus_option, replicas_option


def model_frames(video: Path | None, height: int, width: int, count: int = 100) -> np.ndarray:
    import cv2

    from pipeline.core.preprocess import bgr_to_rgb, resize

    if video is None:  # no video: random pixels (the model's cost does not depend on content)
        return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    cap = cv2.VideoCapture(str(video))
    out: list[np.ndarray] = []
    while len(out) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(resize(bgr_to_rgb(np.asarray(bgr, np.uint8)), height, width))
    cap.release()
    if not out:
        raise typer.BadParameter(f"cannot decode any frame of {video}", param_hint="--video")
    return np.stack(out)


def _check_device(value: str) -> str:
    if value not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{value!r}: use cpu or cuda (the baseline must run where the replicas do)")
    return value


def _check_encoding(value: str) -> str:
    if value not in ("raw", "jpeg"):
        raise typer.BadParameter(f"{value!r}: use raw or jpeg")
    return value


def pipeline(
    model_path: str | None = model_option(),
    video: Path | None = typer.Option(None, "--video", help="Frames to send (default: random pixels)."),
    batch_size: int = batch_size_option(),
    seconds: float = typer.Option(15.0, "--seconds", min=1, help="Seconds the sustained rate is measured."),
    streams: int = typer.Option(4, "--streams", min=1, help="Cameras the frames are spread over."),
    replicas: int = replicas_option(),
    ray_cpus: int | None = ray_cpus_option(),
    device: str = typer.Option("cpu", "--device", callback=_check_device,
                               help="cpu or cuda: where the baseline and the replicas run."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="CUDA: the TensorRT provider (engine built ahead)."),
    redis_instances: int = typer.Option(1, "--redis-instances", min=1, max=64, help=(
        "Redis instances the cameras are pinned over (one carries ~1,500 raw or ~7,000 JPEG frames/s).")),
    publishers: int = typer.Option(1, "--publishers", min=1, max=64, help=(
        "Processes publishing the frames (one publishes a few thousand a second).")),
    frame_encoding: str = typer.Option("raw", "--frame-encoding", callback=_check_encoding,
                                       help="Frames on the bus: raw (uint8) or jpeg (decoded beside the replica)."),
    zones: int = typer.Option(1, "--zones", min=1, max=16, help=(
        "Crops per frame (the whole picture and zones): with --classifiers, what zones and classifiers cost.")),
    classifiers: int = typer.Option(0, "--classifiers", min=0, max=64, help=(
        "Head classifiers on the serving model's backbone (as `vigil models finetune` writes them).")),
    as_json: bool = json_option(),
) -> None:
    """Frames/s through bus -> Ray Serve -> results vs the raw runtime (same cores, same run); with --zones or
    --classifiers, frames/s and crops/s of one zone and one classifier, K classifiers, N zones."""
    from pipeline.bench.pipeline import PipelineBenchOptions, bench_pipeline
    from pipeline.inference.contract import load_onnx, read_contract
    from pipeline.inference.model_store import resolve_model_path

    model = resolve_model_path(model_path)
    c = read_contract(load_onnx(model), str(model))
    opts = PipelineBenchOptions(batch_size=batch_size, seconds=seconds, streams=streams, replicas=replicas,
                                ray_cpus=ray_cpus, device="cuda" if device == "cuda" else "cpu", tensorrt=tensorrt,
                                redis_instances=redis_instances, publishers=publishers,
                                frame_encoding="jpeg" if frame_encoding == "jpeg" else "raw")
    if zones > 1 or classifiers > 0:
        _zones_and_classifiers(model, model_frames(video, c.height, c.width), opts, zones, max(1, classifiers),
                               as_json)
        return
    r = bench_pipeline(model, model_frames(video, c.height, c.width), opts)
    if as_json:
        typer.echo(json.dumps({**r.__dict__, **opts.__dict__, "cpus": os.cpu_count()}, indent=2))
        return
    typer.echo(f"vigil bench pipeline: {device.upper()}, {os.cpu_count()} core(s), batch {batch_size}, {streams} "
               f"camera(s), {replicas} replica(s), {redis_instances} Redis, {publishers} publisher(s), "
               f"{frame_encoding} frames")
    typer.echo(f"  raw runtime        {r.raw_fps:8.1f} frames/s")
    typer.echo(f"  pipeline sustained {r.sustained_fps:8.1f} frames/s   ratio {r.ratio:.2f}")
    typer.echo(f"  frame age at {r.paced_fps:.0f} frames/s (80%): p50 {r.age_ms_p50:.0f} ms, "
               f"p95 {r.age_ms_p95:.0f} ms, p99 {r.age_ms_p99:.0f} ms ({r.frames} frames)")


def _zones_and_classifiers(model: Path, frames: np.ndarray, opts: PipelineBenchOptions, zones: int, k: int,
                           as_json: bool) -> None:
    """`--zones N --classifiers K`: the three steps of :mod:`pipeline.bench.zones`, with K heads made here."""
    import tempfile

    from pipeline.bench.zones import HEADS_TARGET, bench_zones

    with tempfile.TemporaryDirectory(prefix="vigil-bench-heads-") as d:
        r = bench_zones(model, frames, opts, bench_heads(model, Path(d), k), zones)
    if as_json:
        typer.echo(json.dumps({"steps": [{**s.__dict__, "crops_per_s": s.crops_per_s} for s in r.steps],
                               "heads_cost": r.heads_cost, "zones_cost": r.zones_cost, **opts.__dict__,
                               "cpus": os.cpu_count()}, indent=2))
        return
    typer.echo(f"vigil bench pipeline: {opts.device.upper()}, {os.cpu_count()} core(s), batch {opts.batch_size}, "
               f"{opts.streams} camera(s), zones and classifiers (heads on the serving model's backbone)")
    typer.echo(f"  {'zones':>5} {'classifiers':>11} {'frames/s':>9} {'crops/s':>8}")
    for s in r.steps:
        typer.echo(f"  {s.zones:>5} {s.classifiers:>11} {s.frames_per_s:>9.1f} {s.crops_per_s:>8.1f}")
    verdict = "ok" if r.heads_cost <= HEADS_TARGET else f"over the {HEADS_TARGET:.2f}x target"
    zones_verdict = "ok" if r.zones_cost <= 1.0 else "within this machine's ~5% noise" if r.zones_cost <= 1.05 \
        else "over 1x"
    typer.echo(f"  {k} heads cost {r.heads_cost:.2f}x one per crop ({verdict}); {zones} zones cost "
               f"{r.zones_cost:.2f}x one zone's inference per crop ({zones_verdict})")


def bench_heads(model: Path, folder: Path, k: int) -> list[Head]:
    """``k`` two-class heads on ``model``'s backbone, as `vigil models finetune` writes them (weights at random: a
    head's cost does not depend on them), with their familiarity output."""
    import hashlib

    import onnx

    from models.graph import feature_tensor, with_head
    from models.head import Familiarity
    from models.head import Head as TrainedHead
    from pipeline.bench.zones import Head

    base = onnx.load(str(model))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    pooled = feature_tensor(base)
    shapes = onnx.shape_inference.infer_shapes(base).graph.value_info
    dims = next(v.type.tensor_type.shape.dim for v in shapes if v.name == pooled)
    width = dims[1].dim_value  # [N, features, 1, 1]
    rng = np.random.default_rng(0)
    out = []
    for i in range(k):
        centroids = rng.normal(size=(width, 2)).astype(np.float32)
        head = TrainedHead(rng.normal(0, 0.05, (width, 2)).astype(np.float32), np.zeros(2, np.float32), 0, 0, 0.0,
                           0.0, Familiarity(centroids / np.linalg.norm(centroids, axis=0), 0.1))
        path = folder / f"head{i}.onnx"
        onnx.save(with_head(base, head, ("a", "b"), {"model_name": f"head{i}", "base_model_sha256": sha}), str(path))
        out.append(Head(path, ("a", "b")))
    return out
