"""Options several commands share: one definition each, so their names, defaults and help agree."""

from __future__ import annotations

from typing import Any

import typer


def model_option(help_text: str = "ONNX model file (default: the cached model from `vigil models fetch`).") -> Any:
    return typer.Option(None, "--model", "-m", help=help_text)


def json_option(help_text: str = "Print one JSON document on stdout instead of the table.") -> Any:
    return typer.Option(False, "--json", help=help_text)


DEVICES = ("auto", "cpu", "cuda")


def _check_device(value: str) -> str:
    if value not in DEVICES:
        raise typer.BadParameter(f"{value!r}: use auto, cpu or cuda")
    return value


def device_option(default: str = "auto") -> Any:
    return typer.Option(default, "--device", callback=_check_device, help="auto (CUDA when usable), cpu or cuda.")


def batch_size_option(default: int = 32) -> Any:
    return typer.Option(default, "--batch-size", min=1, help="Frames classified at once.")


def replicas_option() -> Any:
    return typer.Option(1, "--replicas", min=1, help="Ray Serve replicas of the model.")


def duration_option() -> Any:
    return typer.Option(None, "--duration-s", min=0.1,
                        help="Stop this long after the pipeline is up (default: run until Ctrl-C).")


def ray_cpus_option() -> Any:
    return typer.Option(None, "--ray-cpus", min=1, help="CPUs for the local Ray instance (default: all).")


def metrics_port_option() -> Any:
    return typer.Option(None, "--metrics-port", min=0, max=65535, metavar="PORT",
                        help="Port of /metrics, over metrics.port of the config: workers sharing a host and a "
                             "config need one each; 0 picks a free one (printed at start).")
