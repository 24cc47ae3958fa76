"""`vigil ingest --config FILE [--shard i/n | auto/n] [--frame-size 224x224]`: run an ingest worker."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import typer

from pipeline.cli.options import metrics_port_option
from pipeline.ingest.shard import parse_shard


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"224x224"`` (width x height) -> ``(height, width)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise typer.BadParameter("expected WIDTHxHEIGHT, e.g. 224x224", param_hint="--frame-size")
    return int(m.group(2)), int(m.group(1))


def ingest(
    config: Path = typer.Option(..., "--config", "-c", help="Vigil YAML config (streams:, redis:, ingest:)."),
    shard: str | None = typer.Option(
        None, "--shard", help="i/n: own the cameras of shard i of n; auto/n: i is this StatefulSet "
        "pod's ordinal (host name suffix -N)."),
    frame_size: str | None = typer.Option(
        None, "--frame-size", help="Model input size WIDTHxHEIGHT that frames are resized to (default 224x224)."),
    metrics_port: int | None = metrics_port_option(),
) -> None:
    """Read cameras, sample and resize frames, publish them to Redis. SIGHUP reloads, SIGTERM stops."""
    from pipeline.ingest.frame_path import DEFAULT_FRAME_SIZE
    from workers.ingest import run

    size = parse_frame_size(frame_size) if frame_size is not None else DEFAULT_FRAME_SIZE
    # The host name is read here, at the CLI layer, and passed down explicitly.
    shard_tuple = parse_shard(shard, socket.gethostname()) if shard else (0, 1)
    run(config, shard_tuple, size, metrics_port)
