"""uvicorn serving one FastAPI app in a thread of this process, on a socket bound before it starts.

``server = ThreadedServer("console", host, port)``; ``server.bind()`` (port 0 picks a free one; an
:class:`OSError` when the port is taken, for the caller to explain), then ``server.start(app)`` and,
at the end, ``server.stop()``. Binding first lets a caller fail before it starts anything else, and
lets it read the port before the app is built.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from pipeline.core.errors import VigilError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


class ThreadedServer:
    """One app, one socket, one thread; ``port`` is the bound port (0 before :meth:`bind`)."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name, self.host, self.requested_port = name, host, port
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else 0

    def bind(self) -> None:
        """Bind and listen; :class:`OSError` (nothing left open) when the address cannot be had."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self._sock = sock

    def start(self, app: FastAPI) -> None:
        """Serve ``app`` on the bound socket; returns once uvicorn accepts connections."""
        if self._sock is None:
            self.bind()
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"{self.name}-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise VigilError(f"the {self.name} HTTP server did not start on {self.host}:{self.requested_port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Finish the requests in flight, stop serving and close the socket (also when never started)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the %s HTTP server did not stop within %.0f s", self.name, STOP_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server, self._thread, self._sock = None, None, None
