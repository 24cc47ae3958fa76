"""`vigil models info|fetch|export|convert`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from models import store

app = typer.Typer(help="Get, inspect and convert models.", no_args_is_help=True)


@app.command("info")
def info(model: str | None = typer.Argument(None, help="ONNX file (default: cached model)."),
         labels: Path | None = typer.Option(None, "--labels"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Contract, classes, size and sha256 of a model."""
    from models.info import model_info

    doc = model_info(store.resolve_model_path(model), labels)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"{doc['path']}\n  size      {doc['size_bytes'] / 1e6:.1f} MB, {doc['parameters']:,} parameters"
               f"\n  sha256    {doc['sha256']}\n  opset     {doc['opset']}\n  contract  {doc['contract']}"
               f"\n  classes   {doc['output']['num_classes']}: {', '.join(doc['classes_sample'])}, …")
    for k, v in doc["metadata"].items():
        typer.echo(f"  meta      {k} = {v}")


@app.command("fetch")
def fetch(dest: Path | None = typer.Option(None, "--dest", help="Folder (default: the Vigil cache)."),
          force: bool = typer.Option(False, "--force", help="Download even if cached.")) -> None:
    """Download the pinned MobileNetV2 ONNX model and verify its checksum."""
    path = store.fetch(dest, force=force)
    typer.echo(str(path))


@app.command("export")
def export(out: Path | None = typer.Option(None, "--out", help="Output .onnx (default: the cache)."),
           weights: str = typer.Option("DEFAULT", "--weights", help="DEFAULT, IMAGENET1K_V1/V2, FILE.pth or none."),
           opset: int = typer.Option(17, "--opset")) -> None:
    """Export torchvision MobileNetV2 to ONNX with uint8 NHWC input (needs vigil[export])."""
    from models.export import export_mobilenet_v2
    from pipeline.config import cache_dir

    path = export_mobilenet_v2(out or cache_dir() / store.EXPORTED_NAME, weights=weights, opset=opset)
    typer.echo(str(path))


@app.command("convert")
def convert(model: Path = typer.Argument(..., help="Source ONNX model."),
            out: Path = typer.Option(..., "--out", help="Output .onnx."),
            fp16: bool = typer.Option(False, "--fp16", help="Convert weights to float16.")) -> None:
    """Convert a model (today: --fp16; uint8 input and float32 output are kept)."""
    from models.convert import convert_fp16

    if not fp16:
        raise typer.BadParameter("choose a conversion: --fp16", param_hint="--fp16")
    typer.echo(str(convert_fp16(model, out)))
