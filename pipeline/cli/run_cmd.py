"""`vigil run --config FILE` and `vigil demo [VIDEO]`: the whole pipeline on this machine."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.cli.options import duration_option, model_option, ray_cpus_option
from pipeline.cli.terminal import stderr_console
from pipeline.core.config import VigilConfig, load_config, validate_config
from pipeline.core.config import ray_address as ray_address_of
from pipeline.core.redact import redact_url
from pipeline.core.sink_config import sink_name

if TYPE_CHECKING:  # the CLI imports the pipeline only for the command that runs it (`vigil --help` stays quick)
    from pipeline.ops.runner import LocalPipeline


def _serve_until_stopped(cfg: VigilConfig, duration_s: float | None, table: bool, ray_cpus: int | None,
                         ray_address: str | None = None) -> None:
    """Run the pipeline until Ctrl-C, SIGTERM or ``duration_s``; then stop it in order and return (exit 0)."""
    from pipeline.ops.runner import LocalPipeline

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def handle_signals() -> dict[int, Any]:
        return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    previous = handle_signals()
    console = stderr_console
    pipeline = LocalPipeline(cfg, ray_cpus=ray_cpus, ray_address=ray_address)
    try:
        with pipeline:
            handle_signals()  # again: starting Ray installs a crash handler of its own over SIGTERM
            deadline = time.monotonic() + duration_s if duration_s else None  # counted from ready, not start-up
            if not stop.is_set():
                _watch(pipeline, stop, deadline, console if table else None)
            console.print("stopping: ingest, inference, sinks, redis …")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    console.print("stopped")
    _summary(console, pipeline)


def _summary(console: Console, pipeline: LocalPipeline) -> None:
    """What the run did, per camera, and where its results went."""
    for sid, t in pipeline.totals.items():
        console.print(f"  {sid}: {t['published']} frame(s) published, {t['classified']} classified, "
                      f"{t['dropped']} dropped, {t['dead_lettered']} dead-lettered", soft_wrap=True)
    outputs = []
    for i, sink in enumerate(pipeline.cfg.sinks):
        path, url = getattr(sink, "path", None), getattr(sink, "url", None)
        target = path or (redact_url(url) if url else None)
        outputs.append(f"{sink_name(sink, i)} -> {target}" if target else sink_name(sink, i))
    console.print("results went to: " + ("; ".join(outputs) or "the Redis stream vigil:results only (no sinks)"),
                  soft_wrap=True)  # a path is copied from here: never broken over lines


def _table(pipeline: LocalPipeline, console: Console) -> Table:
    title = f"vigil: metrics http://{pipeline.cfg.metrics.host}:{pipeline.metrics_port}/metrics (Ctrl-C stops)"
    from pipeline.cli.live_table import live_table

    return live_table(pipeline.rows(), title, console.width)


def _watch(pipeline: LocalPipeline, stop: threading.Event, deadline: float | None, console: Console | None) -> None:
    """Refresh the live table (when ``console``) until ``stop`` is set or ``deadline`` passes."""

    def wait(refresh: Callable[[], None]) -> None:
        while not stop.wait(1.0):
            refresh()
            if deadline is not None and time.monotonic() >= deadline:
                return

    if console is None:
        wait(lambda: None)
        return
    with Live(_table(pipeline, console), console=console, refresh_per_second=2) as live:
        wait(lambda: live.update(_table(pipeline, console)))


def run(
    config: Path = typer.Option(..., "--config", "-c", help="Vigil YAML config."),
    model: str | None = model_option("ONNX model file; overrides inference.model of the config."),
    duration_s: float | None = duration_option(),
    table: bool = typer.Option(True, "--table/--no-table", help="Live per-camera table on stderr."),
    ray_cpus: int | None = ray_cpus_option(),
    ray_address: str | None = typer.Option(
        None, "--ray-address", metavar="ADDRESS",
        help="Join this Ray cluster (HOST:PORT of its head, ray://HOST:10001, or auto) instead of starting a Ray "
             "here; default: $RAY_ADDRESS, else ray.address of the config. Vigil deploys its own Serve "
             "application there (ray.app_name) and deletes only that one on exit."),
) -> None:
    """Start Redis (if none configured), Ray Serve, the ingest and sink workers; Ctrl-C stops all."""
    from pipeline.ops import preflight

    cfg = load_config(config)
    if model is not None:  # relative to the current folder, as any path on the command line
        model = str(Path(model).expanduser().resolve())
        cfg = cfg.model_copy(update={"inference": cfg.inference.model_copy(update={"model": model})})
    preflight.check(cfg, str(config))
    _serve_until_stopped(cfg, duration_s, table, ray_cpus, ray_address_of(cfg, ray_address))


def demo(
    video: Path = typer.Argument(..., metavar="VIDEO", help="A video file, served as a looping camera."),
    model: str | None = model_option("ONNX model file (default: the cached MobileNetV2, downloaded on first use)."),
    fps: float = typer.Option(5.0, "--fps", help="Frames per second to classify."),
    duration_s: float | None = duration_option(),
    out: Path | None = typer.Option(None, "--out", help="Folder for results.jsonl and events.jsonl."),
) -> None:
    """Run the pipeline on a video file: a live table, and results plus events as JSON lines."""
    from pipeline.inference.model_store import model_or_fetch
    from pipeline.ops import preflight

    if not video.is_file():
        raise typer.BadParameter(f"{video} is not a file", param_hint="VIDEO")
    model_path = model_or_fetch(model).resolve()  # a newcomer has no model yet: fetch the pinned one, once
    folder = out or Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    cfg = validate_config({
        "streams": [{"id": "demo", "url": str(video.resolve()), "fps": fps, "loop": True}],
        "inference": {"model": str(model_path), "batch_size": 8, "replicas": 1, "http_port": 0},
        "sinks": [{"type": "jsonl", "path": str(folder / "results.jsonl")},
                  {"type": "events", "path": str(folder / "events.jsonl"), "hysteresis": 2}],
        "metrics": {"port": 0}, "console": {"port": 0},
    }, source="demo")
    preflight.check(cfg, "vigil demo")
    stderr_console.print(f"results: {folder / 'results.jsonl'}  events: {folder / 'events.jsonl'}", soft_wrap=True)
    _serve_until_stopped(cfg, duration_s, True, None)
