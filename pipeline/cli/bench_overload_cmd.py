"""`vigil bench overload`: the real path under 50-300% of its capacity (see :mod:`pipeline.bench.overload`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pipeline.cli.options import batch_size_option, json_option, model_option, ray_cpus_option, replicas_option

if TYPE_CHECKING:
    from pipeline.bench.overload import OverloadReport, Step

HEADER = (f"{'load':>5} {'cam fps':>7} {'offered/s':>9} {'published/s':>11} {'classified/s':>12} "
          f"{'age p50/p95/p99 ms':>19} {'max/min':>7} {'CPU ms/frame':>12} {'machine':>7} "
          f"{'Redis MB (bound)':>16}  drops")


def _row(s: Step) -> str:
    load = f"{s.load:.0%}" if s.load else "cap"
    age = "/".join(f"{a:.0f}" for a in s.age_ms)
    drops = ", ".join(f"{k} {v}" for k, v in sorted(s.dropped.items())) or "-"
    return (f"{load:>5} {s.camera_fps:>7.2f} {s.offered_fps:>9.1f} {s.published_fps:>11.1f} "
            f"{s.classified_fps:>12.1f} {age:>19} {s.share_max_min:>7.2f} {s.process_cpu_ms_per_frame:>12.2f} "
            f"{s.machine_cpu_pct:>6.0f}% {s.redis_mb:>6.1f} ({s.redis_bound_mb:>6.1f})  {drops}")


def _parse_loads(text: str) -> tuple[float, ...]:
    try:
        loads = tuple(float(x.strip().rstrip("%")) / (100 if x.strip().endswith("%") else 1)
                      for x in text.split(",") if x.strip())
    except ValueError:
        loads = ()
    if not loads or min(loads) <= 0:
        raise typer.BadParameter(f"{text!r}: give comma-separated positive loads, as fractions of capacity "
                                 "(0.5,1,3) or percentages (50%,100%,300%)", param_hint="--loads")
    return loads


def overload(
    video: Path = typer.Argument(..., metavar="VIDEO", exists=True, dir_okay=False,
                                 help="An H.264 MP4 file the cameras serve."),
    model_path: str | None = model_option(),
    cameras: int = typer.Option(32, "--cameras", min=1, help="RTSP cameras, each at the video's frame rate."),
    loads: str | None = typer.Option(None, "--loads", help=(
        "Offered loads, as fractions of the measured capacity (default: seven steps from 0.5 to 3).")),
    seconds: float = typer.Option(20.0, "--seconds", min=2, help="Measured seconds per step."),
    settle_s: float = typer.Option(8.0, "--settle-s", min=0, help="Seconds each step settles before it is measured."),
    batch_size: int = batch_size_option(),
    replicas: int = replicas_option(),
    ray_cpus: int | None = ray_cpus_option(),
    as_json: bool = json_option(),
) -> None:
    """Real RTSP cameras through `vigil run`'s components at 50-300% of capacity: rate, age, fairness, memory."""
    from pipeline.bench.overload import OverloadOptions, bench_overload
    from pipeline.inference.model_store import resolve_model_path

    opts = OverloadOptions(model=resolve_model_path(model_path), video=video, cameras=cameras,
                           loads=_parse_loads(loads) if loads is not None else OverloadOptions.loads,
                           seconds=seconds, settle_s=settle_s, batch_size=batch_size, replicas=replicas,
                           ray_cpus=ray_cpus)
    if not as_json:
        typer.echo(f"vigil bench overload: {video.name} to {cameras} RTSP camera(s), batch {batch_size}, "
                   f"{replicas} replica(s), {os.cpu_count()} core(s); {seconds:g} s a step after {settle_s:g} s "
                   "to settle")
        typer.echo(HEADER)
    report = bench_overload(opts, progress=(lambda s: None) if as_json else (lambda s: typer.echo(_row(s))))
    _report(report, as_json)


def _report(report: OverloadReport, as_json: bool) -> None:
    from pipeline.bench.overload import verdicts

    checks = verdicts(report)
    if as_json:
        typer.echo(json.dumps({**asdict(report), "cpus": os.cpu_count(),
                               "targets": [asdict(v) for v in checks]}, indent=2))
        return
    typer.echo(f"capacity: {report.capacity_fps:.1f} frames/s classified with every camera sampling at "
               f"{report.source_fps:g} fps ({report.cameras * report.source_fps:g} offered); a frame is "
               f"{report.frame_bytes / 1024:.0f} KB in Redis")
    if report.model_raw_fps > 0:
        ratio = report.capacity_fps / report.model_raw_fps
        typer.echo(f"the model alone on these cores (measured first): {report.model_raw_fps:.1f} images/s at its "
                   f"best batch ({report.model_raw_batch}); capacity is {ratio:.2f}x that")
    for v in checks:
        typer.echo(f"  {'met ' if v.met else 'MISS'}  {v.target}: {v.figure}")
