"""`vigil bench model`: raw runtime throughput, the baseline pipeline benchmarks are measured against."""

from __future__ import annotations

import json
import os

import typer

from pipeline.cli.options import device_option, json_option, model_option
from pipeline.core.config import GpuOptions

app = typer.Typer(rich_markup_mode=None, help="Benchmarks (figures printed, never asserted).", no_args_is_help=True)


@app.command("model")
def model(
    model_path: str | None = model_option(),
    batch_sizes: str = typer.Option("1,8,32,64", "--batch-sizes", help="Comma-separated batch sizes to time."),
    seconds: float = typer.Option(3.0, "--seconds", min=0.1, help="Seconds timed per batch size."),
    device: str = device_option(),
    prefer_nhwc: bool = typer.Option(True, "--prefer-nhwc/--no-prefer-nhwc",
                                     help="CUDA: let convolutions run in NHWC (faster on tensor cores)."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="CUDA: replay a captured graph per batch size."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Use the TensorRT execution provider when present."),
    lanes: int = typer.Option(
        0, "--lanes", min=0,
        help="Threads sharing each batch (0 = auto: one single-threaded lane per core on CPU, 1 on GPU)."),
    as_json: bool = json_option(),
) -> None:
    """Images/s of the model runtime per batch size on this machine."""
    from pipeline.bench.model import bench_model
    from pipeline.inference.model_store import resolve_model_path
    from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

    sizes = sorted({int(b) for b in batch_sizes.split(",") if b.strip()})
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("comma-separated positive integers", param_hint="--batch-sizes")
    gpu = GpuOptions(prefer_nhwc=prefer_nhwc, cuda_graphs=cuda_graphs, tensorrt=tensorrt)
    rows = []
    # The model is loaded once; only CUDA graphs, which capture one shape, need a session per batch size.
    for group in ([[b] for b in sizes] if cuda_graphs else [sizes]):
        opts = RuntimeOptions(device=device, batch_size=max(group), gpu=gpu, top_k=5, lanes=lanes)
        with ModelRuntime(resolve_model_path(model_path), opts) as rt:
            rows.extend(bench_model(rt, group, seconds))
            provider = rt.provider
    if as_json:
        typer.echo(json.dumps({"provider": provider, "cpus": os.cpu_count(),
                               "rows": [r.__dict__ for r in rows]}, indent=2))
        return
    typer.echo(f"vigil bench model: {provider}, {os.cpu_count()} CPU(s), each batch split over "
               f"{rows[0].lanes} lane(s)")
    typer.echo(f"{'batch':>6} {'images/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'vs b=1':>7}")
    base = rows[0].images_per_s
    for r in rows:
        typer.echo(f"{r.batch_size:>6} {r.images_per_s:>10.1f} {r.latency_ms_p50:>8.2f} "
                   f"{r.latency_ms_p95:>8.2f} {r.images_per_s / base:>6.2f}x")


from pipeline.cli import bench_ingest_cmd  # noqa: E402 - registered after the app exists

app.command("ingest")(bench_ingest_cmd.ingest)

from pipeline.cli import bench_pipeline_cmd  # noqa: E402 - registered after the app exists

app.command("pipeline")(bench_pipeline_cmd.pipeline)

from pipeline.cli import bench_overload_cmd  # noqa: E402 - registered after the app exists

app.command("overload")(bench_overload_cmd.overload)

from pipeline.cli import bench_stages_cmd  # noqa: E402 - registered after the app exists

app.command("stages")(bench_stages_cmd.stages)
