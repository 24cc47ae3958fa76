"""`vigil bench model` prints a throughput table (figures only; nothing about speed is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import vigil


def test_bench_model_reports_each_batch_size(shared_model: Path) -> None:
    out = vigil("bench", "model", "--model", shared_model, "--batch-sizes", "1,4", "--seconds", "0.3",
                "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["provider"] == "CPUExecutionProvider"
    assert [r["batch_size"] for r in doc["rows"]] == [1, 4]
    assert all(r["images_per_s"] > 0 and r["batches"] >= 3 for r in doc["rows"])
    text = vigil("bench", "model", "--model", shared_model, "--batch-sizes", "2", "--seconds", "0.2")
    assert text.returncode == 0 and "images/s" in text.stdout
