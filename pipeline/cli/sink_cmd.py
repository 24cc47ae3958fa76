"""`vigil sink --config FILE`: run the sink worker (results -> JSONL, webhook, events, ...)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.options import metrics_port_option


def sink(config: Path = typer.Option(..., "--config", "-c", help="Vigil YAML config (redis:, sinks:)."),
         name: str | None = typer.Option(None, "--name", help="Consumer name (default: host name)."),
         metrics_port: int | None = metrics_port_option()) -> None:
    """Deliver results from Redis to every configured sink until SIGTERM."""
    from workers.sink import run

    run(str(config), name, metrics_port)
