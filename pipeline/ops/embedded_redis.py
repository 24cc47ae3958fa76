"""A private redis-server for `vigil run` when the config names no Redis.

A real redis-server process (the system's ``redis-server``, or the one shipped by the ``redis-server``
pip package), on loopback, with a random password, its files in a temporary directory, stopped
(and the directory removed) when the context exits.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from pipeline.core.errors import BusError
from pipeline.core.redis_clients import connect
from pipeline.ops.processes import stop_process

log = logging.getLogger(__name__)

_STARTUP_PROBE_TIMEOUT_S = 2.0  # a loopback server that has not answered in 2 s is not up yet


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_server  # type: ignore[import-not-found]  # optional: pip install redis-server

        return str(redis_server.REDIS_SERVER_PATH)
    except ImportError:
        pass
    raise BusError("no Redis configured and no redis-server to start one: install it (apt-get install "
                   "redis-server, or pip install redis-server), or set redis.urls in the config")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedRedis:
    def __init__(self, maxmemory_mb: int = 1024) -> None:
        self.maxmemory_mb = maxmemory_mb
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """The redis-server's process id while it runs (benchmarks measure its CPU)."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> EmbeddedRedis:
        binary = find_redis_server()
        self._dir = tempfile.TemporaryDirectory(prefix="vigil-redis-")
        workdir = Path(self._dir.name)
        port, password = _free_port(), secrets.token_urlsafe(24)
        (workdir / "redis.conf").write_text(f"requirepass {password}\n")  # not on the command line (ps)
        self._proc = subprocess.Popen(
            [binary, str(workdir / "redis.conf"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log"),
             "--maxmemory", f"{self.maxmemory_mb}mb"],
            # Its own session: a Ctrl-C on the terminal reaches vigil run, not Redis, which must outlive
            # the ingest, inference and sinks that are still writing while they stop.
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        client = connect(self.url, _STARTUP_PROBE_TIMEOUT_S)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError as exc:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        tail = (workdir / "redis.log").read_text(errors="replace")[-500:] \
                            if (workdir / "redis.log").exists() else ""
                        self.__exit__(None, None, None)
                        raise BusError(f"embedded redis-server did not start: {tail or exc}") from exc
                    time.sleep(0.05)
        finally:
            client.close()
        log.info("started an embedded redis-server on 127.0.0.1:%d (pid %d)", port, self._proc.pid)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
