"""`vigil run --config FILE` and `vigil demo [VIDEO]`: the whole pipeline on this machine."""

from __future__ import annotations

import atexit
import signal
import sys
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
from pipeline.core.config import VigilConfig, load_config, sink_name, validate_config
from pipeline.core.config import ray_address as ray_address_of
from pipeline.core.redact import redact_url

if TYPE_CHECKING:  # the CLI imports the pipeline only for the command that runs it (`vigil --help` stays quick)
    from pipeline.ops.runner import LocalPipeline


# A stop signal ends the run within this many seconds, summary included; past it, every process of the run is
# killed (pipeline.ops.own_session). An orderly stop takes about 8 s on 2 cores.
STOP_GRACE_S = 13.0


class _StopWhileStarting(BaseException):
    """A stop signal while the pipeline starts: start-up is abandoned, and what had started is stopped."""


def unraisable_stops_dropped(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """A ``sys.unraisablehook`` that drops :class:`_StopWhileStarting` and passes anything else to ``previous``.

    Python drops an exception raised where it cannot propagate (an at-fork callback such as logging's
    ``_releaseLock`` while start-up forks a process, a weakref callback) and prints "Exception ignored in"
    with its traceback: for a stop signal that is noise, not an error, since the parent repeats the signal
    every second and the next one lands elsewhere."""
    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, _StopWhileStarting):
            previous(unraisable)

    return hook


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether ``frame`` (where a signal handler interrupted the main thread) runs inside a ``__del__``."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _serve_until_stopped(cfg: VigilConfig, duration_s: float | None, table: bool, ray_cpus: int | None,
                         ray_address: str | None = None) -> None:
    """Run the pipeline until Ctrl-C, SIGTERM or ``duration_s``; then stop it in order and return (exit 0).

    In a session of its own (:mod:`pipeline.ops.own_session`): a signal to the whole process group, as systemd
    and ``timeout`` send it, reaches only the parent, which asks this process to stop."""
    from pipeline.ops.own_session import run_in_own_session

    run_in_own_session(grace_s=STOP_GRACE_S)  # before Ray is imported: its gRPC must not be forked
    atexit.register(_ignore_stop_signals)
    sys.unraisablehook = unraisable_stops_dropped(sys.unraisablehook)
    from pipeline.ops.runner import LocalPipeline

    stop, starting = threading.Event(), [True]
    console = stderr_console
    pipeline = LocalPipeline(cfg, ray_cpus=ray_cpus, ray_address=ray_address)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        # While starting, abandon start-up; never once LocalPipeline.__exit__ stops what had started, nor inside
        # a __del__, where Python would print the exception and drop it: the parent repeats the signal every
        # second, and the next one lands elsewhere.
        if starting[0] and not pipeline.stopping and not _in_finalizer(frame):
            raise _StopWhileStarting

    def handle_signals() -> dict[int, Any]:
        return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    # Installed until the process exits (not restored): the parent repeats its SIGINT until this process is gone.
    handle_signals()
    try:
        with pipeline:
            starting[0] = False
            handle_signals()  # again: starting Ray installs a crash handler of its own over SIGTERM
            deadline = time.monotonic() + duration_s if duration_s else None  # counted from ready, not start-up
            if not stop.is_set():
                _watch(pipeline, stop, deadline, console if table else None)
            console.print("stopping: ingest, inference, sinks, redis …")
    except _StopWhileStarting:
        console.print("stopped while starting: whatever had started was stopped")
    finally:
        handle_signals()  # Ray's SIGTERM handler may be back (a start-up abandoned inside ray.init)
    console.print("stopped")
    _summary(console, pipeline)


def _ignore_stop_signals() -> None:
    """At exit (atexit runs before Python restores the default actions, death for SIGINT): a stop signal that
    comes now (the parent repeats its SIGINT until this process has gone) has nothing left to stop."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _camera_line(stream_id: str, t: dict[str, int]) -> str:
    """``cam: 20 frame(s) published, 12 classified, 0 dropped, 0 dead-lettered, 8 still queued (...)``."""
    line = (f"  {stream_id}: {t['published']} frame(s) published, {t['classified']} classified, "
            f"{t['dropped']} dropped, {t['dead_lettered']} dead-lettered")
    queued = t["backlog"] + t["pending"]
    if queued:
        line += (f", {queued} still queued ({t['backlog']} not read yet, {t['pending']} read without a result)")
    missing = t["published"] - t["classified"] - t["dropped"] - t["dead_lettered"] - queued
    if missing:
        line += f"; {missing} frame(s) unaccounted for (the accounting in Redis was not readable at the end)"
    return line


def _summary(console: Console, pipeline: LocalPipeline) -> None:
    """What the run did, per camera (the figures add up: see :func:`_camera_line`), and where results went."""
    for stream_id, t in pipeline.totals.items():
        console.print(_camera_line(stream_id, t), soft_wrap=True)
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
