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
    defined = set(re.findall(r'"(vigil_[a-z_]+)"', (repo / "pipeline" / "ops" / "metrics.py").read_text()))
    assert len(defined) >= 20 and documented == defined, (sorted(documented - defined), sorted(defined - documented))
