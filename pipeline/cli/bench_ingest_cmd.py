"""`vigil bench ingest VIDEO`: the ingest path's CPU cost against FFmpeg alone (see :mod:`pipeline.bench.ingest`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pipeline.cli.ingest_cmd import parse_frame_size
from pipeline.cli.options import json_option

if TYPE_CHECKING:
    from pipeline.bench.ingest import IngestBench


def ingest(
    video: Path = typer.Argument(..., metavar="VIDEO", exists=True, dir_okay=False, help="An H.264 MP4 file."),
    fps: float = typer.Option(5.0, "--fps", min=0.1, help="Target sampling fps."),
    seconds: float = typer.Option(30.0, "--seconds", min=1.0, help="Video seconds per measurement."),
    frame_size: str = typer.Option("224x224", "--frame-size", help="WIDTHxHEIGHT published."),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Default: a throwaway redis-server."),
    as_json: bool = json_option(),
) -> None:
    """CPU cost of decode+sample+resize+publish vs FFmpeg alone, and keyframe-only savings."""
    from pipeline.bench.ingest import BenchOptions, bench_ingest

    opts = BenchOptions(fps=fps, video_s=seconds, frame_size=parse_frame_size(frame_size))
    _report(video, bench_ingest(video, opts, redis_url), as_json)


def _report(video: Path, bench: IngestBench, as_json: bool) -> None:
    opts, native_fps, runs, redis_cpu_s = bench.options, bench.native_fps, bench.runs, bench.redis_cpu_s
    baseline, full, keyframes = runs
    ratio = full.frames_per_core_s / baseline.frames_per_core_s if baseline.frames_per_core_s else 0.0
    saving = 1.0 - keyframes.cpu_s / full.cpu_s if full.cpu_s else 0.0
    if as_json:
        doc = {"video": str(video), "native_fps": native_fps, "target_fps": opts.fps, "cpus": os.cpu_count(),
               "runs": [{**asdict(r), "frames_per_core_s": r.frames_per_core_s,
                         "cores_per_camera": r.cores_per_camera} for r in runs],
               "vigil_vs_ffmpeg": ratio, "keyframes_only_cpu_saving": saving, "redis_cpu_s": redis_cpu_s,
               "health_cpu_share": full.health_cpu_s / full.cpu_s if full.cpu_s else 0.0,
               "preview_cpu_share": full.preview_cpu_s / full.cpu_s if full.cpu_s else 0.0}
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"vigil bench ingest: {video.name}, {native_fps:g} fps native, sampled at {opts.fps:g} fps, "
               f"{opts.frame_size[1]}x{opts.frame_size[0]} raw frames, {opts.video_s:g} s of video, "
               f"{os.cpu_count()} CPU(s)")
    typer.echo(f"{'run':<36} {'decoded':>8} {'published':>9} {'CPU s':>7} {'frames/s/core':>13} "
               f"{'cores/camera':>12}")
    for r in runs:
        typer.echo(f"{r.name:<36} {r.decoded_frames:>8} {r.published_frames:>9} {r.cpu_s:>7.2f} "
                   f"{r.frames_per_core_s:>13.1f} {r.cores_per_camera:>12.3f}")
    typer.echo(f"vigil / ffmpeg-alone decode throughput per core: {ratio:.2f}x "
               f"(redis-server used {redis_cpu_s:.2f} CPU s for the vigil run, not included)")
    if full.published_frames:
        typer.echo(f"camera health checks: {1e6 * full.health_cpu_s / full.published_frames:.0f} us CPU a sampled "
                   f"frame, {full.health_cpu_s / full.cpu_s:.1%} of the ingest path's CPU")
    if full.previews:
        typer.echo(f"console pictures: {1e6 * full.preview_cpu_s / full.previews:.0f} us CPU a picture (one a second), "
                   f"{full.preview_cpu_s / full.cpu_s:.1%} of the ingest path's CPU")
    typer.echo(f"keyframe-only mode saves {saving:.0%} CPU "
               f"({full.cores_per_camera:.3f} -> {keyframes.cores_per_camera:.3f} cores per camera)")
