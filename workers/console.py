"""`vigil console`: the web console and REST API as a process of its own (reads Redis), until SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from pipeline.console.server import ConsoleServer
from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.ops.ports import check_ports_free


def run(config_path: str) -> None:
    cfg = load_config(config_path)
    if not cfg.console.enabled:
        raise ConfigError(f"{config_path}: console.enabled is false; set it to true to serve the console")
    check_ports_free(cfg, metrics=False, console=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    cfg.redis.bus_urls("the console")
    clients = BusLayout.from_config(cfg.redis).connect(cfg.redis.socket_timeout_s, block_s=1.0)
    try:
        with ConsoleServer(cfg, clients) as console:
            print(f"vigil console: {console.url}", flush=True)
            stop.wait()
    finally:
        clients.close()
