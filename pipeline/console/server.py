"""uvicorn serving the console in a thread of this process: ``with ConsoleServer(cfg, clients) as c: c.url``."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from pipeline.console.api import build_app
from pipeline.console.data import ConsoleData, hysteresis_of
from pipeline.console.tail import ResultsTail
from pipeline.core.bus_layout import BusClients
from pipeline.core.config import VigilConfig
from pipeline.core.errors import ConfigError
from pipeline.web.server import ThreadedServer, url_host

log = logging.getLogger(__name__)


class ConsoleServer:
    def __init__(self, cfg: VigilConfig, clients: BusClients) -> None:
        self.cfg, self.clients = cfg, clients
        self._stop = threading.Event()
        self._http = ThreadedServer("console", cfg.console.host, cfg.console.port)
        self._tail: ResultsTail | None = None

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://{url_host(self.cfg.console.host)}:{self.port}/"

    def __enter__(self) -> ConsoleServer:
        c = self.cfg.console
        self.clients.layout.check_servers(self.cfg.redis.socket_timeout_s, must_answer=False, clients=self.clients)
        try:
            self._http.bind()
        except OSError as exc:
            raise ConfigError(f"console.port {c.port} on {c.host}: {exc.strerror or exc}; free it, or set "
                              "console.port to another port (0 picks a free one)") from exc
        self._tail = ResultsTail(self.clients, hysteresis_of(self.cfg), classifiers=self.cfg.classifiers).__enter__()
        try:
            self._http.start(build_app(ConsoleData(self.cfg, self.clients, self._tail), c, self._stop))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("console: %s (API %sapi/v1, docs %sdocs)", self.url, self.url, self.url)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()  # ends the live event streams, so the server can finish its requests
        self._http.stop()
        if self._tail is not None:
            self._tail.__exit__(None, None, None)
            self._tail = None
