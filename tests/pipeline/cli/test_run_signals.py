"""`vigil run` stops cleanly on Ctrl-C (SIGINT to its process group) and on SIGTERM: in order, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.fixtures.services import wait_for


@contextmanager
def running(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`vigil run` in a session of its own, as a terminal's foreground job is (Ctrl-C reaches the whole
    process group); killed with its group if a test leaves it running."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--no-table"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def write_config(tmp_path: Path, shared_model: Path, video_dir: Path) -> Path:
    """One looping camera, results to tmp_path/results.jsonl, every port picked free."""
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": "sig-cam", "url": str(video_dir / "slideshow.mp4"), "fps": 5, "loop": True}],
        "inference": {"model": str(shared_model), "http_port": 0, "batch_size": 4},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "results.jsonl")}],
        "metrics": {"port": 0}, "console": {"port": 0}}))
    return config


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_run_stops_in_order_and_exits_0(how: str, tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    config = write_config(tmp_path, shared_model, video_dir)
    log = tmp_path / "run.log"
    with running(config, log) as proc:
        assert wait_for(lambda: (tmp_path / "results.jsonl").exists()
                        and (tmp_path / "results.jsonl").stat().st_size > 0, 120), log.read_text()[-3000:]
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    text = log.read_text()
    # It stops in order, then says what it did: the last lines are "stopped" and the run's summary.
    tail = text[text.find("stopping: ingest, inference, sinks, redis"):]
    assert tail and "\nstopped\n" in tail and tail.rstrip().splitlines()[-1].startswith("results went to: "), \
        text[-2000:]
    for symptom in ("SIGTERM received", "PC: @", "Connection refused", "Traceback"):
        assert symptom not in text, f"{symptom!r} in the output:\n{text[-3000:]}"


def test_sigterm_while_starting_stops_cleanly(tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    """SIGTERM after Ray is up but before the cameras run (Ray's own crash handler would abort: exit -6)."""
    config = write_config(tmp_path, shared_model, video_dir)
    log = tmp_path / "run.log"
    with running(config, log) as proc:
        assert wait_for(lambda: "vigil run: Ray up in" in log.read_text(), 120), log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "\nstopped\n" in text and "SIGTERM received" not in text, text[-2000:]
