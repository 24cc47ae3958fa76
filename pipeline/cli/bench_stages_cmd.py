"""`vigil bench stages`: CPU per frame of each data-plane step (publish, Redis, read, decode, result write)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import get_args

import typer

from pipeline.bench.stages import StageCost, bench_stages
from pipeline.bus.wire import Encoding
from pipeline.cli.bench_pipeline_cmd import model_frames
from pipeline.cli.options import json_option


def _encodings(text: str) -> tuple[Encoding, ...]:
    known = get_args(Encoding)
    names = tuple(e.strip() for e in text.split(",") if e.strip())
    if not names or any(e not in known for e in names):
        raise typer.BadParameter(f"comma-separated, from {', '.join(known)}", param_hint="--encodings")
    return names  # type: ignore[return-value]


def _print(costs: list[StageCost], fps: float) -> None:
    typer.echo(f"vigil bench stages: {os.cpu_count()} core(s), {costs[0].frames} frames per step; "
               f"cores at {fps:,.0f} frames/s")
    typer.echo(f"{'encoding':<8} {'step':<20} {'process us':>10} {'redis us':>9} {'total us':>9} {'share':>6} "
               f"{'cores':>7}")
    for encoding in dict.fromkeys(c.encoding for c in costs):
        rows = [c for c in costs if c.encoding == encoding]
        whole = sum(c.total_us for c in rows if c.stage != "encode")  # publish includes the encoding
        for c in rows:
            share = f"{c.total_us / whole:.0%}" if c.stage != "encode" else "-"  # encode: part of publish
            typer.echo(f"{encoding:<8} {c.stage:<20} {c.client_us:>10.1f} {c.redis_us:>9.1f} {c.total_us:>9.1f} "
                       f"{share:>6} {c.cores_at(fps):>7.2f}")
        typer.echo(f"{encoding:<8} {'all but the model':<20} {'':>10} {'':>9} {whole:>9.1f} {'100%':>6} "
                   f"{whole * fps / 1e6:>7.2f}")


def stages(
    video: Path | None = typer.Option(None, "--video", help="Frames to send (default: random pixels; JPEG "
                                      "costs depend on content, so give a real video for the jpeg figures)."),
    frames: int = typer.Option(2000, "--frames", min=100, help="Frames through each step."),
    batch: int = typer.Option(64, "--batch", min=1, help="Frames per read and per result write."),
    encodings: str = typer.Option("raw,jpeg", "--encodings", help="Frame encodings to measure (redis.frame_encoding)."),
    target_fps: float = typer.Option(25_000, "--target-fps", min=1, help="Rate the cores column is for."),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Measure on this Redis (default: an embedded one)."),
    as_json: bool = json_option(),
) -> None:
    """CPU per frame of each step between camera and result (this process and Redis), and cores at a rate."""
    costs = bench_stages(model_frames(video, 224, 224), encodings=_encodings(encodings), count=frames, batch=batch,
                         redis_url=redis_url)
    if as_json:
        typer.echo(json.dumps({"cpus": os.cpu_count(), "target_fps": target_fps,
                               "rows": [{**c.__dict__, "total_us": c.total_us, "cores": c.cores_at(target_fps)}
                                        for c in costs]}, indent=2))
        return
    _print(costs, target_fps)
