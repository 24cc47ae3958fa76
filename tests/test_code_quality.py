"""The code base stays ruff-clean and mypy-strict-clean (settings in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]'"
    return found


def test_ruff_clean() -> None:
    out = subprocess.run([_tool("ruff"), "check", "pipeline", "workers", "models", "tests"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_modules_stay_small() -> None:
    big = [f"{p.relative_to(REPO)}: {n} lines" for p in sorted(REPO.glob("[pwm]*/**/*.py"))
           if ".venv" not in p.parts and (n := len(p.read_text().splitlines())) > 500]
    assert big == [], "split these modules (limit ~500 lines): " + ", ".join(big)


def test_import_layers_hold() -> None:
    # The contracts are in pyproject.toml ([tool.importlinter]); docs/architecture.md explains them.
    out = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout + out.stderr
