"""The one boundary where redis-py's errors become Vigil's (as httpx's ``map_httpcore_exceptions``).

Every call into Redis runs inside :func:`redis_errors` ``(what, where)``; what escapes it is a
:class:`~pipeline.core.errors.BusError` that names the command (``what``) and the server (``where``, a
redacted URL: :attr:`pipeline.core.bus_layout.BusShard.where`), with the redis-py error chained:

=============================================================  =====================================
redis-py (or the socket underneath)                             Vigil
=============================================================  =====================================
``OutOfMemoryError`` (an instance at its ``maxmemory``)         :class:`BusFullError`
``ConnectionError`` (refused, lost, auth), ``TimeoutError``,    :class:`BusUnavailableError`
a Redis Cluster that is down or moving (``ClusterDownError``,
``TryAgainError``, no node reachable), ``OSError``
any other error reply (``ResponseError``: ``WRONGTYPE`` ...)    :class:`BusError`
=============================================================  =====================================

Replies a caller expects (``BUSYGROUP`` on a group that exists, ``NOGROUP`` after a stream was
re-created) are handled inside the block, before they reach the boundary. What to do about the error
(back off, count a dropped frame, serve the last figures) stays the caller's; how long to wait before
trying again is always a :class:`pipeline.core.backoff.Backoff`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError

from pipeline.core.errors import BusError, BusFullError, BusUnavailableError

_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError, RedisClusterException,
                OSError)


def map_redis_error(exc: BaseException, what: str, where: str = "") -> BusError | None:
    """The :class:`BusError` that ``exc`` (raised by ``what`` on the server ``where``) is; None if it is not
    an error of Redis (a bug, or an error of Vigil's own: let it through)."""
    server = f"Redis {where}" if where else "Redis"
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, redis.OutOfMemoryError):
        return BusFullError(f"{server} is full (maxmemory): {what} refused; it takes writes again as memory "
                            "is freed (or raise its maxmemory)")
    if isinstance(exc, _UNAVAILABLE):
        return BusUnavailableError(f"{server} is unavailable: {what} failed: {detail}")
    if isinstance(exc, redis.RedisError):
        return BusError(f"{server}: {what} failed: {detail}")
    return None


@contextlib.contextmanager
def redis_errors(what: str, where: str = "") -> Iterator[None]:
    """Raise redis-py's errors from the block as Vigil's (see the module's table), ``from`` the original."""
    try:
        yield
    except BusError:
        raise
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        mapped = map_redis_error(exc, what, where)
        if mapped is None:  # pragma: no cover - every caught type maps
            raise
        raise mapped from exc
