"""Execution-provider planning on this (GPU-less) machine, and the one log line it produces."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import GpuOptions
from pipeline.inference.providers import cgroup_cpu_quota, cuda_device_count, plan_providers
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions

KW = {"batch_size": 8, "input_name": "images", "input_shape_tail": "224x224x3", "engine_root": Path("engines"),
      "model_bytes": b"model"}


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
    lines = [r for r in caplog.records if r.name == "pipeline.inference.providers"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "device=cuda was asked for" in lines[0].getMessage()


def test_usable_cpus_follows_the_affinity_mask() -> None:
    # In a child process, so this test's own affinity stays as it was.
    code = ("import os; from pipeline.inference.providers import usable_cpus; "
            "print(usable_cpus()); os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(usable_cpus())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    full, pinned = map(int, out.stdout.split())
    assert 1 <= full <= len(os.sched_getaffinity(0))
    assert pinned == 1


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], cpus: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == cpus
