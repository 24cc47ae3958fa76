"""The one way Vigil connects to Redis, and which instance of the frame bus holds a camera.

:func:`connect` makes every client: the connect and command timeouts come from the config
(``redis.socket_timeout_s``), a command that blocks on the server (``XREADGROUP BLOCK``) gets its
block time on top, and an invalid URL is a :class:`~pipeline.core.errors.BusError` that names the
URL redacted. ``fail_fast`` clients make no retries of their own: the frame publisher has its own
backoff, and a publish must fail at once so the camera thread keeps sampling while Redis is down.

Several instances: each camera is pinned to one by rendezvous hashing (SHA-1 of the camera id and
the instance's ``host:port/db``): stable across processes and restarts (unlike Python's salted
``hash()``), independent of password rotation, and adding an instance moves only the cameras that
land on it.

A ``redis+sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=...]`` URL
is one instance too: the primary that those Sentinels name ``SERVICE``. Its client asks them where the
primary is before each new connection, so after a failover the next command (a retry of the one that
failed) reaches the promoted replica. The password is the primary's; ``sentinel_password`` the
Sentinels' own, if they have one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import BusError
from pipeline.core.redact import redact_url

# Typed Any: redis-py's reply types are a union over decode_responses; Vigil's are always bytes.
Client = Any


SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelAddress:
    """A ``redis+sentinel://`` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """Parse ``url``; a :class:`BusError` (URL redacted) says what is wrong with it."""
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        path = [p for p in parts.path.split("/") if p]
        problem = ""
        sentinels: list[tuple[str, int]] = []
        for item in hosts.split(","):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                problem = f"{item!r} is not HOST:PORT"
                break
            sentinels.append((host.strip("[]"), int(port)))
        if not problem and (not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit())):
            problem = "the path must be /SERVICE or /SERVICE/DB (SERVICE: the name the Sentinels monitor)"
        if problem:
            raise BusError(f"Redis URL {redact_url(url)} is invalid: {problem}; write "
                           "redis+sentinel://[:PASSWORD@]HOST:26379[,HOST:26379...]/SERVICE[/DB]")
        user, _, password = userinfo.partition(":")
        sentinel_password = parse_qs(parts.query).get("sentinel_password", [""])[0]
        return cls(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0, unquote(user) or None,
                   unquote(password) if password else None, sentinel_password or None)


class _SentinelPrimary(redis.Redis):
    """The primary's client; closing it also closes its connections to the Sentinels."""

    def close(self) -> None:
        manager = self.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        super().close()
        for sentinel in manager.sentinels:
            sentinel.close()


def _connect_sentinel(url: str, options: dict[str, Any]) -> Client:
    address = SentinelAddress.parse(url)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    manager = redis.Sentinel(list(address.sentinels),  # type: ignore[no-untyped-call]
                             sentinel_kwargs={**timeouts, "password": address.sentinel_password})
    return manager.master_for(address.service, redis_class=_SentinelPrimary,  # type: ignore[no-untyped-call]
                              db=address.db, username=address.username, password=address.password, **options)


def connect(url: str, timeout_s: float, *, block_s: float = 0.0, fail_fast: bool = False) -> Client:
    """A client for ``url`` (nothing is sent until the first command).

    ``timeout_s`` bounds connecting and every command; commands that block on the server for up to
    ``block_s`` get that much longer.
    """
    options: dict[str, Any] = {"socket_timeout": timeout_s + block_s, "socket_connect_timeout": timeout_s}
    if fail_fast:
        options.update(retry=Retry(NoBackoff(), 0), health_check_interval=0)
    try:
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            return _connect_sentinel(url, options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise BusError(f"Redis URL {redact_url(url)} is invalid: {exc}") from exc


def connect_all(urls: list[str], timeout_s: float, *, block_s: float = 0.0) -> list[Client]:
    """One client per instance of the bus, in ``redis.urls`` order; closes those made if one fails."""
    clients: list[Client] = []
    try:
        for url in urls:
            clients.append(connect(url, timeout_s, block_s=block_s))
    except BusError:
        close_all(clients)
        raise
    return clients


def close_all(clients: list[Client]) -> None:
    for client in clients:
        client.close()


def instance_identity(url: str) -> str:
    """``host:port/db`` (or the socket path, or the Sentinels' service) of a Redis URL: what pinning hashes,
    without secrets; a Sentinel-managed primary keeps its identity across failovers."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        address = SentinelAddress.parse(url)
        return f"sentinel:{address.service}/{address.db}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def pick_instance(stream_id: str, identities: list[str]) -> int:
    """Index of the instance a camera is pinned to (rendezvous hashing over SHA-1)."""
    if not identities:
        raise BusError("the frame bus has no Redis instance (redis.urls is empty)")

    def score(ident: str) -> int:
        digest = hashlib.sha1(f"{stream_id}\0{ident}".encode(), usedforsecurity=False).digest()
        return int.from_bytes(digest[:8], "big")

    return max(range(len(identities)), key=lambda i: score(identities[i]))


def ping(url: str, timeout_s: float) -> None:
    """Raise :class:`BusError` (URL redacted) unless the Redis at ``url`` answers within ``timeout_s``."""
    client = connect(url, timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BusError(f"Redis {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


@contextlib.contextmanager
def bus_errors(what: str) -> Iterator[None]:
    """Wrap redis-py's errors as :class:`BusError` ("<what> failed: ...") at this boundary."""
    try:
        yield
    except redis.RedisError as exc:
        raise BusError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def forget_idle_consumers(client: Client, key: str, group: str, keep: str, idle_ms: int) -> list[str]:
    """Delete the consumers of ``group`` on ``key`` other than ``keep`` that have nothing pending and have
    been idle over ``idle_ms``: a replica or sink pod that stopped (or restarted under a new name) leaves
    one behind each time. Safe for a live one too: nothing of it is lost, and its next read recreates it.
    Returns the names deleted."""
    gone = []
    for c in client.xinfo_consumers(key, group):
        name = c["name"].decode()
        if name != keep and not c["pending"] and c["idle"] > idle_ms:
            client.xgroup_delconsumer(key, group, name)
            gone.append(name)
    return gone
