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

:func:`connect_cluster` makes the one client of a Redis Cluster (``redis.mode: cluster``): the URLs are
nodes to start from; it learns the slot map from the first that answers, on its first command (so a
process starts while the cluster is away, as with one instance), and follows MOVED and failovers itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.typing import ConsumerT, EncodableT, ExpiryT, FieldT, GroupT, KeyT, PatternT, ScriptTextT, StreamIdT

from pipeline.core.errors import BusError
from pipeline.core.redact import redact_url


class RedisClient(Protocol):
    """The Redis commands Vigil sends on a client, exactly those: what :func:`connect` (a ``redis.Redis``, or a
    Sentinel's primary) and :func:`connect_cluster` (a :class:`ClusterClient`, a lazy ``RedisCluster``) return.

    Each parameter Vigil passes is redis-py's own (name, kind, default, type from :mod:`redis.typing`), up to the
    last one it uses: mypy proves below that ``redis.Redis`` and ``RedisCluster`` both satisfy this protocol.
    Replies are typed ``Any``: redis-py types them ``ResponseT``-like unions over its sync and async clients and
    ``decode_responses`` (``bytes | str``, RESP2 list | RESP3 dict); Vigil's clients never decode, so replies are
    bytes, and each call site says what it reads.
    """

    def close(self) -> None: ...
    def config_get(self, pattern: PatternT = "*") -> Any: ...
    def delete(self, *names: KeyT) -> Any: ...
    # redis-py leaves execute_command's arguments untyped: EncodableT is what its encoder takes.
    def execute_command(self, *args: EncodableT) -> Any: ...
    def get(self, name: KeyT) -> Any: ...
    def hget(self, name: KeyT, key: FieldT) -> Any: ...
    def hgetall(self, name: KeyT) -> Any: ...
    def hset(self, name: KeyT, key: FieldT | None = None, value: EncodableT | None = None,
             mapping: Mapping[FieldT, EncodableT] | None = None) -> Any: ...
    def info(self, section: str | None = None, *args: str, **kwargs: Any) -> Any: ...  # kwargs: target_nodes
    def ping(self) -> Any: ...
    # No default: redis-py's differ (a transaction on one instance, none on a cluster), so Vigil always says.
    def pipeline(self, transaction: bool) -> RedisPipeline: ...
    def register_script(self, script: ScriptTextT) -> Script: ...
    def scan_iter(self, match: PatternT | None = None, count: int | None = None,
                  _type: str | None = None) -> Iterator[Any]: ...
    def set(self, name: KeyT, value: EncodableT, ex: ExpiryT | str | None = None,
            px: ExpiryT | str | None = None) -> Any: ...
    def xack(self, name: KeyT, groupname: GroupT, *ids: StreamIdT) -> Any: ...
    def xadd(self, name: KeyT, fields: dict[FieldT, EncodableT], id: StreamIdT = "*", maxlen: int | None = None,
             approximate: bool = True) -> Any: ...
    def xclaim(self, name: KeyT, groupname: GroupT, consumername: ConsumerT, min_idle_time: int,
               message_ids: list[StreamIdT] | tuple[StreamIdT]) -> Any: ...
    def xgroup_create(self, name: KeyT, groupname: GroupT, id: StreamIdT = "$", mkstream: bool = False) -> Any: ...
    def xgroup_delconsumer(self, name: KeyT, groupname: GroupT, consumername: ConsumerT) -> Any: ...
    def xinfo_consumers(self, name: KeyT, groupname: GroupT) -> Any: ...
    def xinfo_groups(self, name: KeyT) -> Any: ...
    def xinfo_stream(self, name: KeyT) -> Any: ...
    def xpending_range(self, name: KeyT, groupname: GroupT, min: StreamIdT, max: StreamIdT, count: int,  # noqa: PLR0917 - redis-py's
                       consumername: ConsumerT | None = None, idle: int | None = None) -> Any: ...
    def xrange(self, name: KeyT, min: StreamIdT = "-", max: StreamIdT = "+") -> Any: ...
    def xread(self, streams: dict[KeyT, StreamIdT], count: int | None = None, block: int | None = None) -> Any: ...
    def xreadgroup(self, groupname: str, consumername: str, streams: dict[KeyT, StreamIdT], count: int | None = None,
                   block: int | None = None) -> Any: ...
    def xrevrange(self, name: KeyT, max: StreamIdT = "+", min: StreamIdT = "-", count: int | None = None) -> Any: ...


class RedisPipeline(Protocol):
    """What Vigil does with a pipeline (:meth:`RedisClient.pipeline`): queue these commands, then :meth:`execute`
    (in a ``with`` block, which resets it). Parameters as in :class:`RedisClient`; a queued command's reply is the
    pipeline itself (typed ``Any``, as redis-py types it the client's reply), :meth:`execute` returns the replies."""

    def __enter__(self) -> RedisPipeline: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None, /) -> None: ...
    def execute(self) -> list[Any]: ...
    def execute_command(self, *args: EncodableT) -> Any: ...
    def expire(self, name: KeyT, time: ExpiryT) -> Any: ...
    def hincrby(self, name: KeyT, key: FieldT, amount: int = 1) -> Any: ...
    def hincrbyfloat(self, name: KeyT, key: FieldT, amount: float = 1.0) -> Any: ...
    def hmget(self, name: KeyT, keys: FieldT | Iterable[FieldT], *args: FieldT) -> Any: ...
    def hset(self, name: KeyT, key: FieldT | None = None, value: EncodableT | None = None,
             mapping: Mapping[FieldT, EncodableT] | None = None) -> Any: ...
    def incr(self, name: KeyT, amount: int = 1) -> Any: ...
    def xack(self, name: KeyT, groupname: GroupT, *ids: StreamIdT) -> Any: ...
    def xadd(self, name: KeyT, fields: dict[FieldT, EncodableT], id: StreamIdT = "*", maxlen: int | None = None,
             approximate: bool = True) -> Any: ...
    def xlen(self, name: KeyT) -> Any: ...


# mypy proves that redis-py's clients and pipelines satisfy the protocols (never called). RedisCluster.pipeline is
# unannotated in redis-py (so returns Any); ClusterClient satisfies RedisClient through its __getattr__.
def _redis_is_a_client(client: redis.Redis) -> RedisClient:
    return client


def _cluster_is_a_client(client: RedisCluster) -> RedisClient:
    return client


def _pipeline_is_a_pipeline(pipeline: Pipeline) -> RedisPipeline:
    return pipeline


def _cluster_pipeline_is_a_pipeline(pipeline: ClusterPipeline) -> RedisPipeline:
    return pipeline


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


def _connect_sentinel(url: str, options: dict[str, Any]) -> RedisClient:
    address = SentinelAddress.parse(url)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    manager = redis.Sentinel(list(address.sentinels),  # type: ignore[no-untyped-call, unused-ignore]
                             sentinel_kwargs={**timeouts, "password": address.sentinel_password})
    primary: _SentinelPrimary = manager.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        address.service, redis_class=_SentinelPrimary, db=address.db, username=address.username,
        password=address.password, **options)
    return primary


def connect(url: str, timeout_s: float, *, block_s: float = 0.0, fail_fast: bool = False) -> RedisClient:
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


class ClusterClient:
    """A :class:`redis.cluster.RedisCluster` made on first use: its constructor already asks a node for the
    slot map, which must not fail a process that starts while the cluster is away. redis-py's cluster
    errors that are not :class:`redis.RedisError` (no node reachable, a slot no node serves) are raised as
    :class:`redis.ConnectionError`, from its commands, pipelines and iterators alike, so a cluster that is
    away fails like a single instance that is down."""

    def __init__(self, nodes: list[ClusterNode], options: dict[str, Any]) -> None:
        self._nodes, self._options = nodes, options
        self._cluster: RedisCluster | None = None
        self._lock = threading.Lock()

    def _get(self) -> RedisCluster:
        with self._lock:
            if self._cluster is None:
                with _as_connection_error():
                    self._cluster = RedisCluster(startup_nodes=self._nodes, require_full_coverage=False,
                                                 **self._options)
            return self._cluster

    def __getattr__(self, name: str) -> Any:
        return _translated(lambda: getattr(self._get(), name))

    def close(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()


class _ClusterPipeline:
    """A cluster pipeline whose errors are translated like :class:`ClusterClient`'s."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def __getattr__(self, name: str) -> Any:
        return _translated(lambda: getattr(self._pipeline, name))

    def __enter__(self) -> _ClusterPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipeline.reset()


@contextlib.contextmanager
def _as_connection_error() -> Iterator[None]:
    try:
        yield
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"Redis Cluster: {type(exc).__name__}: {exc}") from exc


def _translated(attribute: Callable[[], Any]) -> Any:
    with _as_connection_error():
        value = attribute()
    if not callable(value):
        return value

    def call(*args: Any, **kwargs: Any) -> Any:
        with _as_connection_error():
            result = value(*args, **kwargs)
        if isinstance(result, ClusterPipeline):
            return _ClusterPipeline(result)
        if isinstance(result, Iterator):
            return _translated_items(result)
        return result

    return call


def _translated_items(items: Iterator[Any]) -> Iterator[Any]:
    with _as_connection_error():
        yield from items


def connect_cluster(urls: list[str], timeout_s: float, *, block_s: float = 0.0, fail_fast: bool = False) -> RedisClient:
    """The client of the Redis Cluster whose nodes ``urls`` name (user, password and TLS from the first URL
    that has them; each node's own ``/db`` must be 0: a cluster has one database)."""
    nodes: list[ClusterNode] = []
    auth: dict[str, Any] = {}
    for url in urls:
        parts = urlsplit(url)
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise BusError(f"Redis URL {redact_url(url)} is invalid: {exc}") from exc
        if parts.path.strip("/") not in ("", "0"):
            raise BusError(f"Redis URL {redact_url(url)}: a Redis Cluster has database 0 only; drop the /DB")
        nodes.append(ClusterNode(parts.hostname or "localhost", port))  # type: ignore[no-untyped-call]
        if parts.password and "password" not in auth:
            auth.update(username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password))
    if not nodes:
        raise BusError("the Redis Cluster has no node: list at least one under redis.urls")
    options: dict[str, Any] = {"socket_timeout": timeout_s + block_s, "socket_connect_timeout": timeout_s, **auth}
    if any(url.startswith("rediss://") for url in urls):
        options["ssl"] = True
    if fail_fast:
        options["retry"] = Retry(NoBackoff(), 0)
    return ClusterClient(nodes, options)


def is_cluster(client: RedisClient | RedisPipeline) -> bool:
    """Whether ``client`` (or the pipeline it made) talks to a Redis Cluster, where scripts run as EVAL."""
    return isinstance(client, ClusterClient | _ClusterPipeline | RedisCluster)


def shard_identity(url: str) -> str:
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


def pick_shard(stream_id: str, identities: list[str]) -> int:
    """Index of the shard a camera is pinned to (rendezvous hashing over SHA-1)."""
    if not identities:
        raise BusError("the frame bus has no Redis instance (redis.urls is empty)")

    def score(ident: str) -> int:
        digest = hashlib.sha1(f"{stream_id}\0{ident}".encode(), usedforsecurity=False).digest()
        return int.from_bytes(digest[:8], "big")

    return max(range(len(identities)), key=lambda i: score(identities[i]))


def forget_idle_consumers(client: RedisClient, key: str, group: str, keep: str, idle_ms: int) -> list[str]:
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
