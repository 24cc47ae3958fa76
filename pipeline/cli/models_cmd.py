"""`vigil models info|fetch|export|convert|compare|finetune|build-engine|quantize`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pipeline.cli.options import device_option, json_option, model_option
from pipeline.inference import model_store as store

if TYPE_CHECKING:
    from models.quantize import QuantizeReport

app = typer.Typer(rich_markup_mode=None, help="Get, inspect and convert models.", no_args_is_help=True)


@app.command("info")
def info(model: str | None = typer.Argument(None, metavar="MODEL", help="ONNX file (default: cached model)."),
         labels: Path | None = typer.Option(None, "--labels", help="Labels file (one class per line)."),
         as_json: bool = json_option("Print the JSON document.")) -> None:
    """Contract, classes, size and sha256 of a model."""
    from models.info import model_info

    doc = model_info(store.resolve_model_path(model), labels)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    classes = "; ".join(f'"{name}"' for name in doc["classes_sample"])  # ImageNet names hold commas
    typer.echo(f"{doc['path']}\n  size      {doc['size_bytes'] / 1e6:.1f} MB, {doc['parameters']:,} parameters"
               " (weights and biases)"
               f"\n  sha256    {doc['sha256']}\n  opset     {doc['opset']}\n  contract  {doc['contract']}"
               f"\n  classes   {doc['output']['num_classes']}: {classes}; …")
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
           opset: int = typer.Option(17, "--opset", help="ONNX opset of the exported graph.")) -> None:
    """Export torchvision MobileNetV2 to ONNX with uint8 NHWC input (needs vigil[export])."""
    from models.export import export_mobilenet_v2
    from pipeline.core.config import cache_dir

    path = export_mobilenet_v2(out or cache_dir() / store.EXPORTED_NAME, weights=weights, opset=opset)
    typer.echo(str(path))


@app.command("convert")
def convert(model: Path = typer.Argument(..., metavar="MODEL", help="Source ONNX model."),
            out: Path = typer.Option(..., "--out", help="Output .onnx."),
            fp16: bool = typer.Option(False, "--fp16", help="Convert weights to float16.")) -> None:
    """Convert a model (today: --fp16; uint8 input and float32 output are kept)."""
    from models.convert import convert_fp16

    if not fp16:
        raise typer.BadParameter("choose a conversion: --fp16", param_hint="--fp16")
    typer.echo(str(convert_fp16(model, out)))


@app.command("compare")
def compare(models: list[Path] = typer.Argument(..., metavar="MODELS", help="ONNX classifiers to compare."),
            data: Path = typer.Option(..., "--data", "-d", help="Image folder: one sub-folder per class."),
            out: Path = typer.Option(Path("compare"), "--out", help="Folder for variants, compare.json/png."),
            variants: bool = typer.Option(True, "--variants/--no-variants",
                                          help="Add fp16 and int8 (static, calibrated) copies of the first model."),
            calibration: int = typer.Option(64, "--calibration-images", min=1,
                                            help="Images the int8 copy is calibrated on."),
            bench_seconds: float = typer.Option(1.0, "--bench-seconds", min=0.0, help="Timing per batch size."),
            device: str = device_option("cpu"),
            as_json: bool = json_option()) -> None:
    """Accuracy, F1, size, parameters, latency and throughput of models (and fp16/int8 variants)."""
    from dataclasses import asdict

    from rich.console import Console

    from models.compare import CompareOptions, print_table
    from models.compare import compare as run_compare

    rows = run_compare(models, data, out, CompareOptions(variants=variants, calibration_images=calibration,
                                                         bench_seconds=bench_seconds, device=device,
                                                         progress=not as_json))
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    import sys

    print_table(rows, Console() if sys.stdout.isatty() else Console(width=160))  # no wrapped table in files
    typer.echo(f"plot: {out / 'compare.png'}  table: {out / 'compare.json'}")


@app.command("finetune")
def finetune(data: Path = typer.Option(..., "--data", "-d", help="Image folder: one sub-folder per class."),
             out: Path = typer.Option(..., "--out", "-o", help="The new .onnx model."),
             model: str | None = model_option("Base model (default: the cached model)."),
             val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.01, max=0.99,
                                                help="Share of each class held out for validation."),
             augment: int = typer.Option(2, "--augment", min=0, help="Augmented copies per training image."),
             epochs: int = typer.Option(300, "--epochs", min=1, help="Most passes over the training features."),
             patience: int = typer.Option(25, "--patience", min=1, help="Early stopping on validation loss."),
             seed: int = typer.Option(0, "--seed", help="Seed of the split, augmentation and training."),
             unfreeze: int = typer.Option(0, "--unfreeze", min=0, help=(
                 "Also train the last N inverted-residual blocks (needs vigil[lab]: PyTorch); 0: the head only.")),
             backbone_lr_ratio: float = typer.Option(0.1, "--backbone-lr-ratio", min=1e-4, max=1.0, help=(
                 "With --unfreeze: the blocks' learning rate as a share of the head's.")),
             search: bool = typer.Option(False, "--search", help=(
                 "Hyperparameter search with optuna (learning rate, weight decay, augmentation, unfreeze depth) on "
                 "the validation split, then the best exported. Needs vigil[lab].")),
             trials: int = typer.Option(20, "--trials", min=1, help="--search: trials to run (more on a resume)."),
             timeout_s: float | None = typer.Option(None, "--timeout-s", min=1, help="--search: time budget."),
             study: Path | None = typer.Option(None, "--study", help=(
                 "--search: the study's SQLite file, resumed if it exists (default: OUT.study.db).")),
             name: str | None = typer.Option(None, "--name", help="model_name metadata (default: file stem)."),
             version: str | None = typer.Option(None, "--version", help="model_version metadata."),
             device: str = device_option("cpu"),
             as_json: bool = json_option("Print the JSON report instead of the summary.")) -> None:
    """Transfer learning: a new softmax head on the model's pooled features (with --unfreeze N, the last N
    blocks trained too), exported as one ONNX model."""
    from models.finetune import FinetuneOptions
    from models.finetune import finetune as run_finetune

    opts = FinetuneOptions(val_fraction=val_fraction, augment_copies=augment, epochs=epochs, patience=patience,
                           seed=seed, unfreeze=unfreeze, backbone_lr_ratio=backbone_lr_ratio, model_name=name,
                           model_version=version, device=device, progress=not as_json)
    base = store.resolve_model_path(model)
    if search:
        from models.search import SearchOptions
        from models.search import search as run_search

        found = run_search(base, data, out, opts, SearchOptions(trials=trials, timeout_s=timeout_s, study=study))
        result = found.best
        if not as_json:
            _print_trials(found.trials, found.best_params)
    else:
        result = run_finetune(base, data, out, opts)
    doc = result.as_dict()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"{out}: {len(result.classes)} classes ({', '.join(result.classes)}); validation accuracy "
               f"{result.exported_val_accuracy:.3f} on {result.val_images} images (best epoch {result.head.best_epoch} "
               f"of {result.head.epochs_run}); {result.train_features} training features from "
               f"{result.train_images} images; {result.seconds:.1f} s")
    if result.deep is not None:
        typer.echo(f"  {doc['unfrozen_blocks']} block(s) trained with the head: the head alone reached "
                   f"{doc['head_only_val_accuracy']:.3f} on the same split; exported model vs torch: "
                   f"max |difference| {result.torch_onnx_max_diff:.1e} in the validation probabilities")


def _print_trials(trials: list[dict[str, Any]], best: dict[str, Any]) -> None:
    typer.echo(f"{'trial':>5} {'state':>9} {'val loss':>9} {'val acc':>8}  lr / weight decay / augment / unfreeze")
    for t in trials:
        p, loss, acc = t["params"], t["val_loss"], t["val_accuracy"]
        typer.echo(f"{t['number']:>5} {t['state']:>9} {loss if loss is not None else float('nan'):>9.4f} "
                   f"{acc if acc is not None else float('nan'):>8.3f}  {p.get('learning_rate', 0):.2g} / "
                   f"{p.get('weight_decay', 0):.2g} / {p.get('augment_copies', '-')}x{p.get('augment_strength', 0):.2f}"
                   f" / {p.get('unfreeze', '-')}")
    typer.echo(f"best: {best}")


@app.command("build-engine")
def build_engine(model: str | None = model_option(),
                 config: Path | None = typer.Option(None, "--config", "-c", help=(
                     "Take the batch size, inference.gpu options and model of this config, so `vigil run` with it "
                     "finds the engine.")),
                 batch_size: int | None = typer.Option(None, "--batch-size", min=1, max=4096, help=(
                     "Largest batch of the engine's shape profile (default: the config's, else 32).")),
                 fp32: bool = typer.Option(False, "--fp32", help="Build in fp32 (default: fp16)."),
                 check: Path | None = typer.Option(None, "--check", help=(
                     "Folder of photographs: compare the engine's top-1 with the fp32 model's on CPU."))) -> None:
    """Build the model's TensorRT engine ahead (on this machine's GPU), where the pipeline looks for it."""
    from pipeline.core.config import InferenceConfig, default_engine_cache, load_config
    from pipeline.core.preprocess import read_image_rgb
    from pipeline.inference.engine_build import build_engine as build

    inf = load_config(config).inference if config is not None else InferenceConfig()
    gpu = inf.gpu.model_copy(update={"tensorrt_fp16": not fp32 and inf.gpu.tensorrt_fp16})
    photos = sorted(p for p in check.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if check else []
    result = build(store.resolve_model_path(model or inf.model), batch_size=batch_size or inf.batch_size, gpu=gpu,
                   engine_root=Path(gpu.tensorrt_cache_dir) if gpu.tensorrt_cache_dir else default_engine_cache(),
                   check=[(p.name, read_image_rgb(p)) for p in photos])
    typer.echo(f"{result.folder}: {len(result.files)} engine file(s), {result.seconds:.1f} s")
    for a in result.agreement:
        typer.echo(f"  {a.image}: fp32 {a.reference!r}, engine {a.engine!r}{'' if a.same else '  DIFFERENT'}")
    if any(not a.same for a in result.agreement):
        raise typer.Exit(1)


@app.command("quantize")
def quantize(model: str | None = typer.Argument(None, metavar="MODEL", help=(
                 "fp32 ONNX model (default: inference.model of --config, else the cached model).")),
             frames: list[Path] = typer.Option([], "--frames", "-f", help=(
                 "Image folder (what `vigil capture` writes) or video file to calibrate and check on; repeatable.")),
             config: Path | None = typer.Option(None, "--config", "-c", help=(
                 "Also take frames from this config's cameras (opened and resized as ingest does).")),
             streams: list[str] = typer.Option([], "--stream", help="With --config: only these streams; repeatable."),
             out: Path | None = typer.Option(None, "--out", "-o", help="The int8 model (default: MODEL-int8.onnx)."),
             holdout_fraction: float = typer.Option(0.3, "--holdout-fraction", min=0.05, max=0.9, help=(
                 "Share of each source's frames held out (in runs of --run-length) to check the int8 model on.")),
             run_length: int = typer.Option(10, "--run-length", min=1, help="Consecutive frames held out together."),
             max_frames: int = typer.Option(300, "--max-frames", min=2, help="Frames read from each source, at most."),
             every: int = typer.Option(1, "--every", min=1, help="Keep every n-th frame of a source."),
             calibration_frames: int = typer.Option(200, "--calibration-frames", min=1, help=(
                 "Frames calibrated on, at most (evenly sampled from every source's calibration runs).")),
             method: str = typer.Option("minmax", "--method", help="Calibration: minmax, entropy or percentile."),
             per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Weight scales."),
             reduce_range: bool = typer.Option(False, "--reduce-range", help="7-bit weights (CPUs without VNNI)."),
             exclude: list[str] = typer.Option([], "--exclude", help=(
                 "Node name or op type kept float (the classifier head's outputs always are); repeatable.")),
             exclude_first: int = typer.Option(0, "--exclude-first", min=0, help="Keep the first N Conv nodes float."),
             batch_size: int | None = typer.Option(None, "--batch-size", min=1, help=(
                 "Served batch to time besides 1 (default: inference.batch_size of --config, else 8).")),
             bench_seconds: float = typer.Option(2.0, "--bench-seconds", min=0.0, help=(
                 "Timing per model and batch size; 0: no timing.")),
             as_json: bool = json_option("Print the JSON report instead of the table.")) -> None:
    """Static int8 copy of a model, calibrated on your frames; prints its top-1 agreement with fp32 on frames
    it was not calibrated on (recorded in the model: `vigil run` with inference.precision: int8 checks it)."""
    from dataclasses import replace

    from models.frames import Sampling, from_config, from_path
    from models.quantize import METHODS, QuantizeOptions
    from models.quantize import quantize as run_quantize
    from pipeline.core.config import load_config
    from pipeline.inference.contract import load_onnx, read_contract

    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: use {', '.join(METHODS)}", param_hint="--method")
    cfg = load_config(config) if config is not None else None
    src = store.resolve_model_path(model or (cfg.inference.model if cfg is not None else None))
    contract = read_contract(load_onnx(src), str(src))
    sampling = Sampling((contract.height, contract.width), max_frames=max_frames, every=every)
    sources = [from_path(p, sampling) for p in frames]
    if cfg is not None:
        sources += from_config(cfg, streams, sampling)
    served = batch_size or (cfg.inference.batch_size if cfg is not None else 8)
    opts = replace(QuantizeOptions(), holdout_fraction=holdout_fraction, run_length=run_length,
                   calibration_frames=calibration_frames, method=method, per_channel=per_channel,
                   reduce_range=reduce_range, exclude=tuple(exclude), exclude_first=exclude_first,
                   batch_sizes=(1, served), bench_seconds=bench_seconds)
    report = run_quantize(src, out or src.with_name(f"{src.stem}-int8.onnx"), sources, opts)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    _print_quantize(report, cfg.inference.min_int8_agreement if cfg is not None else 0.99)


def _print_quantize(report: QuantizeReport, minimum: float) -> None:
    typer.echo(f"{'source':<36} {'calibration':>11} {'held out':>8} {'int8 = fp32':>11} {'fp32 +-1 grey':>13}")
    for s in report.sources:
        name = s.name if len(s.name) <= 36 else "…" + s.name[-35:]
        typer.echo(f"{name:<36} {s.calibration_frames:>11} {s.heldout_frames:>8} {s.agreement:>11.3f} "
                   f"{s.fp32_jitter_agreement:>13.3f}")
    m = report.method
    typer.echo(f"agreement {report.agreement:.4f} (top-1, worst source; {report.pooled_agreement:.4f} over all "
               f"{report.heldout_frames} held-out frames); calibrated on {report.calibration_frames} frames: "
               f"{m['format']}, weights {m['weights']}, activations {m['activations']}, {m['calibration']}, "
               f"{m['float_nodes']} node(s) float")
    for row in report.speed:
        typer.echo(f"batch {row.batch_size} ({row.lanes} lane(s)): fp32 {row.fp32_images_per_s:.0f} images/s, "
                   f"int8 {row.int8_images_per_s:.0f} images/s ({row.int8_images_per_s / row.fp32_images_per_s:.2f}x)")
    typer.echo(f"int8 model: {report.out}")
    if report.agreement < minimum:
        typer.echo(f"under inference.min_int8_agreement {minimum:g}: `vigil run` refuses it at inference.precision: "
                   "int8 (exclude more nodes with --exclude-first N / --exclude, or serve fp32)")
