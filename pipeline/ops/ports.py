"""Every port a process will listen on, checked before anything starts.

``vigil run`` starts Redis, Ray and the workers before its HTTP endpoints bind, so a port in use
would otherwise surface late (a metrics port after about 30 s, Serve's port as a long Ray traceback).
"""

from __future__ import annotations

import errno
import socket

from pipeline.core.config import VigilConfig
from pipeline.core.errors import ConfigError


def listening_ports(cfg: VigilConfig, *, metrics: bool = True, serve_http: bool = False,
                    console: bool = False) -> list[tuple[str, str, int]]:
    """(config key, host, port) of each fixed port a process serves (its metrics, the Serve HTTP proxy, the
    console); port 0 (pick a free one) needs no check."""
    ports = [("metrics.port", cfg.metrics.host, cfg.metrics.port)] if metrics and cfg.metrics.enabled else []
    if serve_http:
        ports.append(("inference.http_port", cfg.inference.http_host, cfg.inference.http_port))
    if console and cfg.console.enabled:
        ports.append(("console.port", cfg.console.host, cfg.console.port))
    return [p for p in ports if p[2]]


def check_ports_free(cfg: VigilConfig, *, metrics: bool = True, serve_http: bool = False,
                     console: bool = False) -> None:
    """Raise :class:`ConfigError` naming the key of the first port that cannot be listened on."""
    seen: dict[tuple[str, int], str] = {}
    for key, host, port in listening_ports(cfg, metrics=metrics, serve_http=serve_http, console=console):
        if (host, port) in seen:
            raise ConfigError(f"{key} {port} is also {seen[host, port]}: give each its own port (0 picks a free one)",
                              [f"{key}: {port} is used twice"])
        seen[host, port] = key
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
            try:
                s.bind((host, port))
            except OSError as exc:
                why = "is in use (another Vigil, or another program?)" if exc.errno == errno.EADDRINUSE \
                    else f"cannot be listened on ({exc.strerror})"
                raise ConfigError(f"{key} {port} on {host} {why}: free it, or set {key} to another port "
                                  "(0 picks a free one)", [f"{key}: {port} {why}"]) from exc
