"""`vigil console --config FILE`: the web console and REST API, reading the pipeline's Redis."""

from __future__ import annotations

from pathlib import Path

import typer


def console(config: Path = typer.Option(..., "--config", "-c", help="Vigil YAML config (redis:, streams:, console:).")
            ) -> None:
    """Serve the web console and REST API (console.host:console.port) until SIGTERM."""
    from workers.console import run

    run(str(config))
