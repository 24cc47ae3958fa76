"""The model runs each batch in the sub-batch measured fastest per image (CPU), or whole (asked, or GPU)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.config import InferenceConfig
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.inference.sub_batch import candidates, fastest_sub_batch
from tests.pipeline.inference.test_runtime import load_frames


def test_candidates_are_powers_of_two_up_to_the_batch() -> None:
    assert candidates(32) == [1, 2, 4, 8, 16, 32]
    assert candidates(12) == [1, 2, 4, 8, 12]
    assert candidates(1) == [1]


def test_the_size_cheapest_per_image_wins_with_every_lane_running() -> None:
    """A fake model whose cost per image is lowest at 4 (a fixed cost per call, caches overflowing past 4)."""
    calls: list[int] = []

    def run(x: np.ndarray) -> None:
        n = len(x)
        calls.append(n)
        time.sleep(0.004 + (0.001 if n <= 4 else 0.004) * n)

    choice = fastest_sub_batch(run, lambda n: np.zeros((n, 2), np.uint8), batch_size=16, lanes=2, measure_s=0.05)
    assert choice.size == 4, choice
    assert list(choice.images_per_s) == [1, 2, 4, 8, 16]
    assert all(calls.count(n) >= 1 + 2 * 2 * 2 for n in (1, 2, 4, 8, 16))  # warm, then 2 rounds of >= 2 runs a lane
    assert "sub-batches of 4" in choice.describe()


def test_auto_measures_on_cpu_and_classifies_as_the_whole_batch_does(shared_model: Path, images_dir: Path,
                                                                     expected_images: dict[str, Any],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    frames = load_frames(images_dir, expected_images)
    opts = RuntimeOptions.from_config(InferenceConfig(device="cpu", batch_size=8))
    assert opts.run_batch_size == 0  # the config's default: auto
    with caplog.at_level(logging.INFO, logger="pipeline.inference.runtime"), ModelRuntime(shared_model, opts) as auto:
        assert auto.sub_batch is not None and auto.run_batch_size == auto.sub_batch.size
        assert list(auto.sub_batch.images_per_s) == [1, 2, 4, 8]
        assert all(r > 0 for r in auto.sub_batch.images_per_s.values())
        split = auto.probabilities(frames)
    assert f"runs sub-batches of {auto.run_batch_size}" in caplog.text
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=8)) as whole:
        assert whole.run_batch_size == 8 and whole.sub_batch is None  # not asked: the whole batch, nothing measured
        np.testing.assert_allclose(split, whole.probabilities(frames), atol=1e-5)


def test_an_explicit_size_is_used_as_given_up_to_the_batch(shared_model: Path, images_dir: Path,
                                                           expected_images: dict[str, Any]) -> None:
    frames = load_frames(images_dir, expected_images)
    for asked, used in ((3, 3), (64, 8)):
        with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=8, run_batch_size=asked)) as rt:
            assert (rt.run_batch_size, rt.sub_batch) == (used, None)
            top1 = rt.classify(frames).class_ids[:, 0]
            assert [int(i) for i in top1] == [e["top1_index"] for e in expected_images.values()]
