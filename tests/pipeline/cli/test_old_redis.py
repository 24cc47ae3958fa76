"""Every process that opens the bus refuses a Redis older than 7.0 at start: one line, exit 2, within 5 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import vigil
from tests.fixtures.services import RedisServer


@pytest.mark.parametrize("command", ["run", "ingest", "sink", "console"])
def test_each_entry_point_refuses_redis_6_2(command: str, *, redis_factory: Callable[..., RedisServer],
                                            redis62_binary: str, shared_model: Path, video_dir: Path,
                                            tmp_path: Path) -> None:
    old = redis_factory(password="pw-not-in-output", binary=redis62_binary)
    config = tmp_path / "vigil.yaml"
    config.write_text(f"""
redis: {{urls: ["{old.url()}"]}}
streams: [{{id: cam, url: {video_dir / 'bikes.mp4'}, loop: true, fps: 2}}]
inference: {{model: {shared_model}, http_port: 0}}
sinks: [{{type: jsonl, path: results.jsonl}}]
metrics: {{port: 0}}
console: {{port: 0}}
""")
    t0 = time.monotonic()
    out = vigil(command, "--config", config, timeout_s=60)
    elapsed_s = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-2000:]
    assert f"redis.urls[0] (redis://:***@127.0.0.1:{old.port}/0) is Redis 6.2.14; Vigil needs Redis 7.0 or " \
           "newer, or Valkey 7.2 or newer" in errors[0]
    assert "pw-not-in-output" not in out.stderr + out.stdout
    assert elapsed_s < 5, f"vigil {command} took {elapsed_s:.1f} s to refuse"
    assert not (tmp_path / "results.jsonl").exists()
