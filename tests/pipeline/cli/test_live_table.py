"""The live table in an 80-column terminal: it fits, logs go above it, and a camera that is not live
says why. `vigil run` runs in a real pseudo-terminal; the column choice is also checked as pure logic."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pyte
import yaml

from pipeline.cli.live_table import choose_columns, live_table
from pipeline.ops.runner import CameraRow
from tests.fixtures.services import free_port

BOX = set("│┃┏┓┗┛└┘┡┩┠┨┣┫━─╇╈┳┻┼")


def row(stream_id: str, state: str = "live", error: str = "") -> CameraRow:
    return CameraRow(stream_id=stream_id, state=state, health=[], sampling_fps=(5.0, 5.0), fps_in=5.0, fps_out=5.0,
                     age_p95_s=0.12, dropped=3, stale=1, dead_lettered=0, last_result="Egyptian cat (0.78) / animals",
                     error=error)


def test_columns_give_way_on_narrow_terminals() -> None:
    rows = [row("front-door"), row("parking")]
    wide = [c.header for c in choose_columns(rows, 200)]
    assert wide == ["camera", "state", "health", "sampling", "fps in", "fps out", "age p95", "dropped", "stale",
                    "dead"]
    narrow = [c.header for c in choose_columns(rows, 80)]
    assert narrow[:2] == ["camera", "state"] and "age p95" in narrow and "dead" not in narrow
    assert [c.header for c in choose_columns(rows, 40)] == ["camera", "state"]


def test_a_camera_that_is_not_live_shows_its_error() -> None:
    from rich.console import Console

    console = Console(width=80, record=True, file=io.StringIO())
    console.print(live_table([row("gate", "backing_off", "connection refused by 127.0.0.1:1")], "t", 80))
    text = console.export_text()
    assert "connection refused" in text and "Egyptian cat" not in text
    assert max(len(line) for line in text.splitlines()) <= 80


def _run_in_pty(args: list[str], columns: int, timeout_s: float) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    os.close(master)
    return rc, b"".join(chunks)


def _screen_lines(raw: bytes, columns: int) -> list[str]:
    """What a terminal of ``columns`` shows, top to bottom, scrolled-off lines included."""
    screen = pyte.HistoryScreen(columns, 40, history=100_000)
    pyte.ByteStream(screen).feed(raw)
    history = ["".join(ch.data for ch in line.values()).rstrip() for line in screen.history.top]
    return history + [line.rstrip() for line in screen.display]


def test_vigil_run_in_80_columns(tmp_path: Path, shared_model: Path, video_dir: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": "lobby", "url": str(video_dir / "slideshow.mp4"), "fps": 5, "loop": True},
                    {"id": "gate", "url": f"rtsp://127.0.0.1:{free_port()}/nobody-here", "fps": 5}],
        "ingest": {"open_timeout_s": 2, "backoff_base_s": 0.5, "backoff_cap_s": 1},
        "inference": {"model": str(shared_model), "http_port": 0, "batch_size": 4},
        "sinks": [{"type": "jsonl", "path": "results.jsonl"}], "metrics": {"port": 0},
        "console": {"port": 0}}))
    rc, raw = _run_in_pty([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config),
                           "--duration-s", "8"], 80, 240)
    lines = _screen_lines(raw, 80)
    text = "\n".join(lines)
    assert rc == 0, text[-4000:]
    # The last table drawn is whole: both borders of every line inside 80 columns, the camera names
    # readable, and the camera that is not live says why.
    top = max(i for i, line in enumerate(lines) if line.startswith("┏"))
    bottom = next(i for i in range(top, len(lines)) if lines[i].startswith("└"))
    table = lines[top:bottom + 1]
    assert all(line[-1] in "┓┃┩│┘" for line in table), "\n".join(table)
    rows = {line.split("│")[1].strip(): line for line in table if line.startswith("│")}
    assert set(rows) == {"lobby", "gate"}, "\n".join(table)
    assert "refused" in rows["gate"] and " / " in rows["lobby"], "\n".join(table)
    # Log lines stand alone above the table: none is glued to a border.
    logged = [line for line in lines if re.search(r"\b(INFO|WARNING)\b", line)]
    assert any("WARNING  vigil.camera: camera gate" in line for line in logged), text[-3000:]
    glued = [line for line in logged if BOX & set(line)]
    assert not glued, glued[:3]
