"""`vigil evaluate` and `vigil capture`: the model lab's top-level commands (see :mod:`models`)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from pipeline.cli.options import batch_size_option, device_option, json_option, model_option
from pipeline.cli.terminal import stderr_console
from pipeline.inference import model_store as store


def evaluate(
    data: Path = typer.Option(..., "--data", "-d", help="Image folder: one sub-folder per class."),
    model: str | None = model_option(),
    out: Path | None = typer.Option(None, "--out", help="Folder for report.json, confusion.csv/png "
                                                        "(default: ./eval-<model>)."),
    labels: Path | None = typer.Option(None, "--labels", help="Labels file for the model."),
    batch_size: int = batch_size_option(),
    device: str = device_option(),
    strict_sizes: bool = typer.Option(False, "--strict-sizes", help="Reject images of different sizes."),
    as_json: bool = json_option("Print the JSON report instead of the summary."),
) -> None:
    """Accuracy, top-5, precision/recall/F1, confusion matrix, throughput and size of a model on DATA."""
    from models.evaluate import EvalOptions, print_summary
    from models.evaluate import evaluate as run_evaluation

    path = store.resolve_model_path(model)
    report = run_evaluation(path, data, out or Path(f"eval-{path.stem}"),
                            EvalOptions(batch_size=batch_size, device=device, strict_sizes=strict_sizes,
                                        labels=labels, progress=not as_json))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_summary(report, Console())


def capture(
    config: Path = typer.Option(..., "--config", "-c", help="Vigil YAML config with the camera."),
    stream_id: str = typer.Option(..., "--stream", "-s", help="Stream id from the config."),
    every: str = typer.Option("5s", "--every", help="Interval between saved frames: 5s, 500ms, 1m."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the JPEG frames."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many frames."),
    duration_s: float | None = typer.Option(None, "--duration-s", min=0, help="Stop after this long."),
    zone: str | None = typer.Option(None, "--zone", "-z", help="Save only this zone of the picture (streams[].zones)."),
) -> None:
    """Save frames of a live camera every interval, for labelling (Ctrl-C stops)."""
    from models.capture import CaptureOptions, FrameCapture, parse_interval
    from pipeline.core.config import load_config

    console = stderr_console
    job = FrameCapture(load_config(config), stream_id, out,
                       CaptureOptions(every_s=parse_interval(every), count=count, duration_s=duration_s, zone=zone),
                       on_saved=lambda p: console.print(f"saved {p}"))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        job.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        saved = job.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    typer.echo(f"{len(saved)} frame(s) in {out}")
