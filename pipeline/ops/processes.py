"""Stopping the server processes Vigil starts (the embedded redis-server; the test fixtures' servers)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL if it has not exited within ``timeout_s``.

    A server that ignores SIGTERM (stuck flushing, or stopped by a debugger) must not hang the
    shutdown of everything else.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
