"""The metrics reference lists exactly the metrics defined."""

from __future__ import annotations

import re
from pathlib import Path


def test_metrics_reference_documents_exactly_the_defined_metrics() -> None:
    # Both ways: a metric that appears only after a failure never reaches a healthy scrape (the
    # observability test checks those it sees), and a renamed or removed metric must leave the docs.
    repo = Path(__file__).resolve().parents[3]
    documented = {name.removesuffix("_total")
                  for name in re.findall(r"^\| `(vigil_\w+)`", (repo / "docs" / "metrics.md").read_text(), re.M)}
    # The ops metrics modules: metrics.py, and pipeline_metrics.py (the figures read from Redis).
    defined = {name for module in sorted((repo / "pipeline" / "ops").glob("*metrics.py"))
               for name in re.findall(r'"(vigil_[a-z_]+)"', module.read_text())}
    assert len(defined) >= 20 and documented == defined, (sorted(documented - defined), sorted(defined - documented))
