"""Run the real `vigil` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def vigil(*args: str | Path, env: dict[str, str] | None = None,
          timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout_s, check=False, env=full_env)
