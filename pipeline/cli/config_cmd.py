"""`vigil config check FILE`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.config import load_config

app = typer.Typer(rich_markup_mode=None, help="Validate configuration files.", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., metavar="FILE", help="YAML config file."),
          schema_only: bool = typer.Option(False, "--schema-only", help=(
              "Check the config's keys and values only, not the model and files it names (for a config "
              "written for another machine, such as a Kubernetes ConfigMap)."))) -> None:
    """Validate FILE and what it names (model, video files, watch labels); every problem with its path
    (exit 2), or a summary (exit 0)."""
    from pipeline.core.bus_layout import BusLayout
    from pipeline.ops import preflight

    cfg = load_config(file)  # ConfigError -> exit 2 in pipeline.cli.main
    if not schema_only:
        preflight.check(cfg, str(file))
    sinks = ", ".join(s.type for s in cfg.sinks) or "none"
    window = cfg.inference.batch_window_ms
    typer.echo(f"{file}: OK: {len(cfg.streams)} stream(s), {BusLayout.from_config(cfg.redis).describe()}, "
               f"sinks: {sinks}, batch {cfg.inference.batch_size}, window "
               f"{'auto' if window is None else f'{window:g} ms'}")
