"""A port in use is named with its config key before anything starts: one line, exit 2, within seconds."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli_helpers import vigil
from tests.fixtures.services import free_port


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(("command", "key"), [("run", "metrics.port"), ("run", "inference.http_port"),
                                              ("run", "console.port"), ("ingest", "metrics.port"),
                                              ("sink", "metrics.port"), ("console", "console.port")])
def test_a_port_in_use_is_refused_before_anything_starts(command: str, key: str, busy_port: int, tmp_path: Path,
                                                         shared_model: Path) -> None:
    section, name = key.split(".")
    doc = {"streams": [{"id": "p", "url": "rtsp://127.0.0.1:1/none"}], "redis": {"urls": ["redis://127.0.0.1:1/0"]},
           "inference": {"model": str(shared_model), "http_port": free_port()},
           "metrics": {"port": free_port()}, "console": {"port": free_port()}}
    if command == "run":
        doc["redis"] = {"urls": []}  # vigil run would start its own, after the check
    doc[section][name] = busy_port  # type: ignore[index]
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(doc))
    t0 = time.monotonic()
    out = vigil(command, "--config", config, timeout_s=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert time.monotonic() - t0 < 20  # no Redis, Ray or camera was started first
    assert out.stderr.strip().splitlines() == [
        f"error: {key} {busy_port} on 127.0.0.1 is in use (another Vigil, or another program?): free it, or set "
        f"{key} to another port (0 picks a free one)"], out.stderr[-2000:]
