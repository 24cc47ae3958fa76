"""A real RTSP server on loopback for benchmarks and tests: ``gst_rtsp_server.py`` as a child process.

GStreamer's RTSP server is reachable from Python only through PyGObject (``python3-gi``), which
Debian ships for its own ``/usr/bin/python3`` and which pip cannot install into a venv, so the
server runs under that interpreter, in its own process. ``RtspServer`` starts it, waits for its
``READY`` line, and can kill (a camera losing power), freeze (SIGSTOP: connections stay open and
nothing flows) and resume it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from pipeline.core.errors import VigilError

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python, which has python3-gi; the venv cannot import gi
SERVER_SCRIPT = Path(__file__).resolve().parent / "gst_rtsp_server.py"
INSTALL_HINT = ("apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-bad")


class RtspServerError(VigilError):
    """The RTSP server could not start (GStreamer missing, a file it cannot demux, a port in use)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port_free(port: int, timeout_s: float = 5.0) -> None:
    """Return once nothing accepts connections on 127.0.0.1:``port`` (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


class RtspServer:
    """``gst_rtsp_server.py`` serving each ``mount -> file`` in a loop on one loopback port."""

    def __init__(self, mounts: dict[str, Path], user: str | None = None, password: str | None = None,
                 auth: str = "basic", python: str = SYSTEM_PYTHON) -> None:
        if not Path(python).exists():
            raise RtspServerError(f"{python} is missing: the RTSP server needs Debian's python3 with GStreamer's "
                                  f"RTSP server ({INSTALL_HINT})")
        self.mounts = mounts
        self.user, self.password, self.auth = user, password, auth
        self.python = python
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def url(self, mount: str, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/{mount.lstrip('/')}"

    def start(self, timeout_s: float = 30.0) -> RtspServer:
        args = [self.python, str(SERVER_SCRIPT), "--port", str(self.port)]
        for mount, path in self.mounts.items():
            args += ["--mount", f"/{mount.lstrip('/')}={path}"]
        if self.user:
            args += ["--user", self.user, "--password", self.password or "", "--auth", self.auth]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "GST_DEBUG": "0"})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        out = b""
        while b"READY" not in out:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                said = out.decode(errors="replace").strip() or "nothing"
                hint = f"; install it with: {INSTALL_HINT}" if "gi" in said or "Gst" in said else ""
                raise RtspServerError(f"the RTSP server did not start within {timeout_s:.0f} s: it said {said}{hint}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                out += os.read(self.proc.stdout.fileno(), 4096)
        self.paused = False
        return self

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.kill()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as if the camera lost power: clients see the connection drop."""
        if self.proc is not None:
            if self.paused:
                self._signal(signal.SIGCONT)
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.proc = None
        self.paused = False
        wait_port_free(self.port)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but no data flows (a frozen camera)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False
