"""`vigil classify IMAGE… [--model PATH] [--json]`: object top-k and scene for image files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer

from pipeline.cli.options import device_option, json_option, model_option
from pipeline.core.config import GpuOptions
from pipeline.core.errors import ImageError


def classify(
    images: list[Path] = typer.Argument(..., metavar="IMAGES", help="Image files or folders of images."),
    model: str | None = model_option(),
    labels: Path | None = typer.Option(None, "--labels", help="Labels file (one class per line)."),
    scene_map: Path | None = typer.Option(None, "--scene-map", help="Scene map YAML."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, max=100, help="Classes reported per image."),
    resize_policy: str = typer.Option("squash", "--resize", help="squash | center_crop | letterbox"),
    device: str = device_option(),
    as_json: bool = json_option("One JSON document on stdout."),
) -> None:
    """Classify images; unreadable ones are reported on stderr and make the exit code 1."""
    from pipeline.core.preprocess import collect_images, read_image_rgb, resize
    from pipeline.inference.model_store import resolve_model_path
    from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

    if resize_policy not in ("squash", "center_crop", "letterbox"):
        raise typer.BadParameter("use squash, center_crop or letterbox", param_hint="--resize")
    files = collect_images(images)
    opts = RuntimeOptions(device=device, top_k=top_k, labels=labels, scene_map=scene_map, gpu=GpuOptions(),
                          batch_size=min(32, max(1, len(files))))
    with ModelRuntime(resolve_model_path(model), opts) as rt:
        h, w = rt.input_size
        frames, ok, failed = [], [], []
        for f in files:
            try:
                frames.append(resize(read_image_rgb(f), h, w, resize_policy))
                ok.append(f)
            except ImageError as exc:
                failed.append((f, str(exc)))
        results = rt.classify(np.stack(frames)).frames() if frames else []
        if as_json:
            doc = {"model": {"path": str(rt.model_path), "name": rt.name, "version": rt.version,
                             "provider": rt.provider},
                   "results": [{"image": str(f), **r.as_dict()} for f, r in zip(ok, results, strict=True)],
                   "errors": [{"image": str(f), "error": e} for f, e in failed]}
            typer.echo(json.dumps(doc, indent=2))
        else:
            for f, r in zip(ok, results, strict=True):
                best = r.top_k[0]
                scene = f"  scene: {r.scene.name} ({r.scene.score:.2f})" if r.scene else ""
                typer.echo(f"{f}: {best.name} ({best.score:.3f}){scene}")
                for lab in r.top_k[1:]:
                    typer.echo(f"    {lab.name} ({lab.score:.3f})")
    for _f, e in failed:
        print(f"error: {e}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)
