"""Execution-provider planning on this (GPU-less) machine, and the one log line it produces."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.config import GpuOptions
from pipeline.model.providers import cuda_device_count, plan_providers
from pipeline.model.runtime import ModelRuntime, RuntimeOptions

KW = {"batch_size": 8, "input_name": "images", "input_shape_tail": "224x224x3", "cache_dir": None}


def test_cpu_requested() -> None:
    plan = plan_providers("cpu", GpuOptions(), **KW)
    assert [p[0] for p in plan.providers] == ["CPUExecutionProvider"] and not plan.wants_gpu


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
def test_auto_without_gpu_plans_cpu_with_reason() -> None:
    plan = plan_providers("auto", GpuOptions(tensorrt=True), **KW)
    assert [p[0] for p in plan.providers] == ["CPUExecutionProvider"]
    assert "no CUDA device" in plan.reason or "no CUDA provider" in plan.reason


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
def test_cuda_requested_without_gpu_warns_once(shared_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    with ModelRuntime(shared_model, RuntimeOptions(device="cuda", warmup=False)) as rt:
        assert rt.provider == "CPUExecutionProvider"
    lines = [r for r in caplog.records if r.name == "pipeline.model.providers"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "device=cuda was asked for" in lines[0].getMessage()
