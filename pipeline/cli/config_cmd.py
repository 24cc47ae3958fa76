"""`vigil config check FILE`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.config import load_config

app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="YAML config file.")) -> None:
    """Validate FILE; print every problem with its path (exit 2), or a summary (exit 0)."""
    cfg = load_config(file)  # ConfigError -> exit 2 in pipeline.cli.main
    sinks = ", ".join(s.type for s in cfg.sinks) or "none"
    window = cfg.inference.batch_window_ms
    typer.echo(f"{file}: OK: {len(cfg.streams)} stream(s), {len(cfg.redis.urls)} redis instance(s), "
               f"sinks: {sinks}, batch {cfg.inference.batch_size}, window "
               f"{'auto' if window is None else f'{window:g} ms'}")
