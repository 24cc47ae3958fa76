"""uvicorn serving the console in a thread of this process: ``with ConsoleServer(cfg, clients) as c: c.url``."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from pipeline.console.api import build_app
from pipeline.console.data import ConsoleData, hysteresis_of
from pipeline.console.tail import ResultsTail
from pipeline.core.bus_layout import BusClients
from pipeline.core.config import VigilConfig
from pipeline.core.errors import ConfigError, VigilError

log = logging.getLogger(__name__)


class ConsoleServer:
    def __init__(self, cfg: VigilConfig, clients: BusClients) -> None:
        self.cfg, self.clients = cfg, clients
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._tail: ResultsTail | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else 0

    @property
    def url(self) -> str:
        host = self.cfg.console.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    def __enter__(self) -> ConsoleServer:
        c = self.cfg.console
        self.clients.layout.check_servers(self.cfg.redis.socket_timeout_s, must_answer=False)
        sock = socket.socket(socket.AF_INET6 if ":" in c.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((c.host, c.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"console.port {c.port} on {c.host}: {exc.strerror or exc}; free it, or set "
                              "console.port to another port (0 picks a free one)") from exc
        sock.listen(128)
        self._sock = sock
        self._tail = ResultsTail(self.clients, hysteresis_of(self.cfg)).__enter__()
        app = build_app(ConsoleData(self.cfg, self.clients, self._tail), c, self._stop)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="console",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.__exit__(None, None, None)
                raise VigilError(f"the console did not start on {c.host}:{c.port}")
            time.sleep(0.02)
        log.info("console: %s (API %sapi/v1, docs %sdocs)", self.url, self.url, self.url)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()  # ends the live event streams, so the server can finish its requests
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
        if self._tail is not None:
            self._tail.__exit__(None, None, None)
            self._tail = None
        self._server, self._thread, self._sock = None, None, None
