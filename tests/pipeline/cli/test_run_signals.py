"""`vigil run` stops cleanly, in order, with its summary and exit 0, within 15 s, whatever signal reaches it and
whichever of its processes receive it: SIGTERM or SIGINT, to the main process or to its whole process group (as
systemd and `timeout` send it, and a terminal's Ctrl-C), while running and during start-up."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline.cli import run_cmd
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


def run_family(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """`vigil run` and every process under it (its session's child, Ray, the embedded Redis)."""
    return [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# Ray's start, and its Serve application's deployment: the two long steps of start-up.
WHEN = {"running": "", "starting ray": "vigil run: starting Ray", "deploying": "vigil run: Ray up in"}


@pytest.mark.parametrize(("sig", "to", "when"), [
    (signal.SIGTERM, "main", "running"),
    (signal.SIGTERM, "group", "running"),  # systemd's KillMode=control-group, and `timeout`
    (signal.SIGINT, "main", "running"),
    (signal.SIGINT, "group", "running"),  # Ctrl-C in a terminal
    (signal.SIGTERM, "main", "deploying"),
    (signal.SIGTERM, "group", "starting ray"),
    (signal.SIGINT, "main", "starting ray"),
    (signal.SIGINT, "group", "deploying"),
], ids=lambda v: getattr(v, "name", v))
def test_every_stop_ends_within_15_s_with_the_summary(sig: signal.Signals, to: str, when: str, *, tmp_path: Path,
                                                      shared_model: Path, video_dir: Path) -> None:
    config = write_config(tmp_path, shared_model, video_dir)
    log = tmp_path / "run.log"
    results = tmp_path / "results.jsonl"
    with running(config, log) as proc:
        if when == "running":
            ready = wait_for(lambda: results.exists() and results.stat().st_size > 0, 120)
        else:
            ready = wait_for(lambda: WHEN[when] in log.read_text(), 120)
        assert ready, log.read_text()[-3000:]
        family = run_family(proc)
        t0 = time.monotonic()
        if to == "group":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(60)
        stop_s = time.monotonic() - t0
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert stop_s < 15, f"the run took {stop_s:.1f} s to stop:\n{text[-3000:]}"
    left = [p for p in family if alive(p)]
    assert not left, f"left running: {[(p.pid, p.name()) for p in left]}"
    # It stops in order, then says what it did: the last lines are "stopped" and the run's summary.
    tail = text[text.find("stopping: ingest, inference, sinks, redis") if when == "running" else 0:]
    assert "\nstopped\n" in tail and tail.rstrip().splitlines()[-1].startswith("results went to: "), text[-2000:]
    if when == "running":  # the camera's line adds up: published = classified + dropped + dead-lettered + queued
        line = next(x for x in tail.splitlines() if x.strip().startswith("sig-cam: "))
        assert "unaccounted" not in line, line
    for symptom in ("SIGTERM received", "PC: @", "Connection refused", "Traceback", "still stopping"):
        assert symptom not in text, f"{symptom!r} in the output:\n{text[-3000:]}"


def test_a_stop_raised_where_python_drops_exceptions_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """The SIGINT handler's exception, raised inside an at-fork callback or a finalizer, prints nothing (the
    parent repeats the signal); any other unraisable exception still reaches the previous hook."""
    seen: list[type[BaseException]] = []
    previous = sys.unraisablehook
    sys.unraisablehook = run_cmd.unraisable_stops_dropped(lambda u: seen.append(type(u.exc_value)))
    try:
        class Raises:
            def __init__(self, exc: BaseException) -> None:
                self.exc = exc

            def __del__(self) -> None:
                raise self.exc

        Raises(run_cmd._StopWhileStarting())
        Raises(ValueError("a real error"))
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert seen == [ValueError]
    assert "Traceback" not in capsys.readouterr().err
