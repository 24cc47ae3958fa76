"""Where the frame bus lives: its shards, the keys of each, and the clients that reach them.

A *shard* is what a camera is pinned to: its frames stream, its counters, and the results, dead letters
and failure reasons of its frames are all on one shard, so each of a frame's steps stays one transaction.

* ``redis.mode: standalone`` (the default): one shard per ``redis.urls`` entry, each an instance of its
  own (or a Sentinel-managed primary), with the key names of :mod:`pipeline.core.keys`.
* ``redis.mode: cluster``: ``redis.cluster_shards`` shards on one Redis Cluster, shard ``N``'s keys
  tagged ``{sN}`` (one hash slot each); the URLs are the nodes to start from. The cluster spreads the
  slots over its primaries; several shards per primary keep the load even.

Cameras are pinned by rendezvous hashing over the shards' identities
(:func:`pipeline.core.redis_clients.pick_shard`): stable across processes and restarts; a shard added
moves only the cameras that land on it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from redis.cluster import RedisCluster

from pipeline.core.config import RedisConfig
from pipeline.core.errors import BusError
from pipeline.core.keys import STANDALONE, KeySpace
from pipeline.core.redact import redact_url
from pipeline.core.redis_clients import RedisClient, connect, connect_cluster, pick_shard, shard_identity
from pipeline.core.redis_errors import redis_errors
from pipeline.core.redis_version import ServerVersion, server_version

log = logging.getLogger(__name__)

_CLUSTER_FRAMES = re.compile(r"^vigil:\{s(\d+)\}:frames:(.+)$")


@dataclass(frozen=True)
class BusShard:
    index: int
    identity: str  # what pinning hashes (no secrets)
    keys: KeySpace
    where: str  # for logs, /readyz and errors: the redacted URL (and the shard, on a cluster)


class BusLayout:
    """The shards of the bus, from ``redis.urls`` and ``redis.mode`` (see the module's docstring)."""

    def __init__(self, urls: Sequence[str], cluster_shards: int = 0) -> None:
        self.urls = list(urls)
        self.is_cluster = cluster_shards > 0
        if self.is_cluster:
            seeds = ",".join(redact_url(u) for u in self.urls)
            self.shards = tuple(BusShard(i, f"cluster/s{i}", KeySpace.cluster_shard(i), f"{seeds} shard {i}")
                                for i in range(cluster_shards))
        else:
            self.shards = tuple(BusShard(i, shard_identity(u), STANDALONE, redact_url(u))
                                for i, u in enumerate(self.urls))
        self._identities = [s.identity for s in self.shards]
        self._pinned: dict[str, int] = {}  # camera -> shard; the layout never changes, so neither does this

    @classmethod
    def from_config(cls, r: RedisConfig) -> BusLayout:
        return cls(r.urls, r.cluster_shards if r.mode == "cluster" else 0)

    def __len__(self) -> int:
        return len(self.shards)

    def shard_of(self, stream_id: str) -> int:
        """Index of the shard a camera is pinned to (hashed once per camera: every publish asks)."""
        shard = self._pinned.get(stream_id)
        if shard is None:
            if not self.urls:
                raise BusError("the frame bus has no Redis instance (redis.urls is empty)")
            shard = self._pinned[stream_id] = pick_shard(stream_id, self._identities)
        return shard

    def keys_of(self, stream_id: str) -> KeySpace:
        return self.shards[self.shard_of(stream_id)].keys

    @property
    def servers(self) -> str:
        """Every URL of the bus, redacted: where an error that concerns all of them happened."""
        return ", ".join(redact_url(u) for u in self.urls)

    def describe(self) -> str:
        """``2 redis instance(s)`` or ``a Redis Cluster (16 shards)``, for start-up lines."""
        if self.is_cluster:
            return f"a Redis Cluster ({len(self.shards)} shards, {len(self.urls)} node URL(s))"
        return f"{len(self.shards)} redis instance(s)"

    def connect(self, timeout_s: float, *, block_s: float = 0.0, fail_fast: bool = False) -> BusClients:
        """Clients for every shard (nothing is sent yet); a cluster's shards share one client."""
        if self.is_cluster:
            shared = connect_cluster(self.urls, timeout_s, block_s=block_s, fail_fast=fail_fast)
            return BusClients(self, [shared] * len(self.shards))
        clients: list[RedisClient] = []
        try:
            for url in self.urls:
                clients.append(connect(url, timeout_s, block_s=block_s, fail_fast=fail_fast))
        except BusError:
            for c in clients:
                c.close()
            raise
        return BusClients(self, clients)

    def connect_first(self, timeout_s: float, *, fail_fast: bool = False) -> tuple[RedisClient, KeySpace]:
        """A client of the first shard only, and its keys: where the camera store and replica statistics live."""
        if not self.urls:
            raise BusError("the frame bus has no Redis instance (redis.urls is empty)")
        if self.is_cluster:
            return connect_cluster(self.urls, timeout_s, fail_fast=fail_fast), self.shards[0].keys
        return connect(self.urls[0], timeout_s, fail_fast=fail_fast), STANDALONE

    def check_servers(self, timeout_s: float, *, must_answer: bool, clients: BusClients | None = None) -> None:
        """Refuse a server Vigil cannot work with (:class:`UnsupportedServerError`, one line): every instance, or
        every node of the cluster, says its version (``INFO server``). Every process that opens the bus calls
        this at start. A server that does not answer is a :class:`BusError` when ``must_answer`` (``vigil run``
        fails fast before starting Ray); otherwise it is checked by whichever process finds it up later.

        ``clients``: the caller's own clients of this layout (:meth:`connect`), asked instead of new ones
        (with their own timeouts; they stay open); without them each server is asked on a new connection
        of ``timeout_s``, closed after."""
        if self.is_cluster:
            self._check_cluster(timeout_s, must_answer, clients)
            return
        for i, url in enumerate(self.urls):
            where = f"redis.urls[{i}] ({redact_url(url)})"
            client = clients.client(i) if clients is not None else connect(url, timeout_s)
            try:
                with redis_errors("INFO server", f"{redact_url(url)} (redis.urls[{i}])"):
                    version = server_version(client)
            except BusError as exc:
                if must_answer:
                    raise
                log.info("%s does not answer yet (%s): its version is checked when it does", where, exc.__cause__)
                continue
            finally:
                if clients is None:
                    client.close()
            version.require_supported(where)

    def _check_cluster(self, timeout_s: float, must_answer: bool, clients: BusClients | None) -> None:
        seeds = self.shards[0].where.rpartition(" shard")[0]
        client = clients.client(0) if clients is not None else self.connect_first(timeout_s)[0]
        try:
            with redis_errors("INFO server", f"Cluster {seeds}"):
                infos = client.info("server", target_nodes=RedisCluster.ALL_NODES)
        except BusError:
            if must_answer:
                raise
            log.info("the Redis Cluster %s does not answer yet: its version is checked when it does", seeds)
            return
        finally:
            if clients is None:
                client.close()
        if not all(isinstance(v, dict) for v in infos.values()):  # one node answered: its INFO, not keyed by node
            infos = {"(the only node)": infos}
        for node, info in sorted(infos.items()):
            ServerVersion.from_info(info).require_supported(f"Redis Cluster node {node} (of {seeds})")

    def frames_key_at(self, position: int, key: bytes | str) -> tuple[int, str] | None:
        """(shard, camera) of a frames stream key that a SCAN of :meth:`BusClients.distinct` ``[position]``
        found; None for a key of a shard this layout does not have (``redis.cluster_shards`` was lowered)."""
        if not self.is_cluster:
            return position, STANDALONE.camera_of_frames(key)
        m = _CLUSTER_FRAMES.match(key.decode() if isinstance(key, bytes) else key)
        if m is None or int(m.group(1)) >= len(self.shards):
            return None
        return int(m.group(1)), m.group(2)

    @property
    def frames_glob(self) -> str:
        return "vigil:{s*}:frames:*" if self.is_cluster else STANDALONE.frames_glob


class BusClients:
    """One client per shard of a :class:`BusLayout` (a cluster's shards share one), closed together."""

    def __init__(self, layout: BusLayout, clients: list[RedisClient]) -> None:
        self.layout, self._clients = layout, clients

    def __len__(self) -> int:
        return len(self._clients)

    def client(self, shard: int) -> RedisClient:
        return self._clients[shard]

    def keys(self, shard: int) -> KeySpace:
        return self.layout.shards[shard].keys

    def where(self, shard: int) -> str:
        return self.layout.shards[shard].where

    def __iter__(self) -> Iterator[tuple[int, RedisClient, KeySpace]]:
        """(shard, its client, its keys) for every shard."""
        for i, c in enumerate(self._clients):
            yield i, c, self.layout.shards[i].keys

    def distinct(self) -> list[RedisClient]:
        """Each connection once: every instance's, or the cluster's one (for SCAN and server-wide reads)."""
        return self._clients[:1] if self.layout.is_cluster else list(self._clients)

    def scan_frames(self) -> Iterator[tuple[int, str]]:
        """(shard, camera) of every frames stream on the bus (raises redis-py's errors)."""
        for position, client in enumerate(self.distinct()):
            for key in client.scan_iter(match=self.layout.frames_glob, count=1000, _type="stream"):
                found = self.layout.frames_key_at(position, key)
                if found is not None:
                    yield found

    def close(self) -> None:
        for c in self.distinct():
            c.close()
