"""The publisher side of the frame bus: XADD each sampled frame to its camera's stream.

A camera's frames go to ``vigil:frames:<camera>`` (:mod:`pipeline.core.keys`) on the bus shard the
camera is pinned to (:class:`pipeline.core.bus_layout.BusLayout`), in one transaction that also counts them;
when the stream is then over ``redis.maxlen`` because inference falls behind,
:data:`pipeline.bus.scripts.TRIM_OVER_MAXLEN` trims its oldest frames, counting those not read yet
(drop-oldest backpressure, per camera and zone). The entry's fields are :mod:`pipeline.bus.wire`'s format.

Each shard (an instance, or a Redis Cluster's hash slot) has its own up/down state and reconnect
backoff: while a shard is down and in backoff, :meth:`FrameBus.publish` raises
:class:`~pipeline.core.errors.BusUnavailableError` without any I/O, so a camera thread never waits on a
dead Redis; its frames are counted as dropped.
URLs may carry an ACL user and password and use TLS (``rediss://``); they are only logged redacted.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from redis.typing import EncodableT, FieldT

from pipeline.bus.scripts import BusScripts
from pipeline.bus.wire import Encoding, FrameMessage, encode_frame
from pipeline.core.backoff import Backoff
from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import VigilConfig
from pipeline.core.errors import BusError, BusFullError, BusUnavailableError
from pipeline.core.keys import INFERENCE_GROUP, KeySpace
from pipeline.core.lifecycle import Lifecycle, not_new, not_open
from pipeline.core.redis_clients import RedisClient
from pipeline.core.redis_errors import redis_errors

log = logging.getLogger("vigil.framebus")

BusStateHandler = Callable[[int, bool], None]  # (index in redis.urls, up)
_MEMORY_HEADROOM = 0.8  # queued frames may take this share of maxmemory; results and the rest need the remainder


def _queue_replies(scripts: BusScripts, keys: KeySpace, stream_ids: list[str], client: RedisClient) -> list[list[int]]:
    """QUEUE_STATE of each camera, pipelined: one round trip."""
    with client.pipeline(transaction=False) as p:
        for stream_id in stream_ids:
            scripts.queue_state(keys=[keys.frames(stream_id), keys.stats(stream_id)], args=[INFERENCE_GROUP], client=p)
        replies: list[list[int]] = p.execute()
    return replies


@dataclass(frozen=True)
class BusOptions:
    """The publisher's settings: the ``redis:`` section, and the ``ingest:`` backoff for reconnects."""

    layout: BusLayout
    maxlen: int
    encoding: Encoding
    jpeg_quality: int
    socket_timeout_s: float
    backoff_base_s: float
    backoff_cap_s: float

    @classmethod
    def from_config(cls, cfg: VigilConfig) -> BusOptions:
        r, i = cfg.redis, cfg.ingest
        return cls(layout=BusLayout.from_config(r), maxlen=r.maxlen, encoding=r.frame_encoding,
                   jpeg_quality=r.jpeg_quality, socket_timeout_s=r.socket_timeout_s,
                   backoff_base_s=i.backoff_base_s, backoff_cap_s=i.backoff_cap_s)


@dataclass
class _Shard:
    """One shard: its client (a cluster's shards share one), keys, up/down state and reconnect backoff."""

    index: int
    redacted_url: str
    client: RedisClient
    keys: KeySpace
    scripts: BusScripts  # the bus's Lua, registered on this client
    backoff: Backoff
    lock: threading.Lock = field(default_factory=threading.Lock)
    up: bool = True
    full: bool = False  # at maxmemory: refusing new frames (up, and reading and writing results go on)
    retry_at: float = 0.0  # time.monotonic() before which calls are skipped (only read while down)
    last_error: str = ""


def _with_keys(fn: Callable[[RedisClient, KeySpace], Any], keys: KeySpace, client: RedisClient) -> Any:
    return fn(client, keys)


class FrameBus:
    """Publisher side of the bus: ``with FrameBus(opts) as bus: bus.publish(msg)``. Thread-safe.

    ``on_bus_state(index, up)`` is told each shard's state when the bus opens and on every change
    (e.g. :meth:`pipeline.ops.metrics.IngestMetrics.set_bus_up`). A bus opens once.
    """

    def __init__(self, opts: BusOptions, on_bus_state: BusStateHandler | None = None) -> None:
        self.opts = opts
        self._on_state: BusStateHandler = on_bus_state or (lambda index, up: None)
        self._shards: list[_Shard] = []
        self._clients: BusClients | None = None
        self._state = Lifecycle.NEW

    def __enter__(self) -> FrameBus:
        if self._state is not Lifecycle.NEW:
            raise BusError(not_new("frame bus", self._state, "make a new FrameBus to publish again"))
        try:
            self._clients = self.opts.layout.connect(self.opts.socket_timeout_s, fail_fast=True)
            self.opts.layout.check_servers(self.opts.socket_timeout_s, must_answer=False, clients=self._clients)
        except BusError:
            self.__exit__(None, None, None)
            raise
        for i, client, keys in self._clients:
            backoff = Backoff(self.opts.backoff_base_s, self.opts.backoff_cap_s)
            self._shards.append(_Shard(index=i, redacted_url=self._clients.where(i), client=client, keys=keys,
                                             scripts=BusScripts(client), backoff=backoff))
        self._state = Lifecycle.OPEN
        for shard in self._shards:
            self._on_state(shard.index, True)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._clients is not None:
            self._clients.close()
        self._clients, self._shards = None, []
        self._state = Lifecycle.CLOSED

    # -- routing -----------------------------------------------------------------------------------

    def shard_index(self, stream_id: str) -> int:
        return self.opts.layout.shard_of(stream_id)

    def shard_url(self, stream_id: str) -> str:
        """The redacted URL of the camera's shard (for /readyz and logs)."""
        return self.opts.layout.shards[self.shard_index(stream_id)].where

    def client_for(self, stream_id: str) -> RedisClient:
        return self._shard(stream_id).client

    def _shard(self, stream_id: str) -> _Shard:
        if self._state is not Lifecycle.OPEN:
            raise BusError(not_open("frame bus", self._state))
        return self._shards[self.shard_index(stream_id)]

    def capacity_warnings(self, frame_bytes: Mapping[str, int]) -> list[str]:
        """Where full queues (every camera's ``redis.maxlen`` frames) would not fit the instance's ``maxmemory``;
        ``frame_bytes``: camera -> what one of its frames takes in Redis (every zone's crop).

        Frames queue in Redis only while inference cannot take them, but then up to ``maxlen`` of each
        camera's; at ``maxmemory`` new frames are refused (counted as ``bus_full``). An instance that
        does not say its ``maxmemory`` (CONFIG refused, as on some managed services) is not checked, nor is a
        Redis Cluster (which primary holds a shard is the cluster's to decide, and changes).
        """
        if self.opts.layout.is_cluster:
            return []
        cameras = Counter(self.shard_index(s) for s in frame_bytes)
        per_frame: Counter[int] = Counter()
        for stream_id, size in frame_bytes.items():
            per_frame[self.shard_index(stream_id)] += size
        out = []
        for idx, count in sorted(cameras.items()):
            one_frame_each = per_frame[idx]  # bytes of one frame of every camera of the shard
            shard = self._shards[idx]
            try:
                with redis_errors("CONFIG GET maxmemory", shard.redacted_url):
                    maxmemory = int(shard.client.config_get("maxmemory").get("maxmemory") or 0)
            except (BusError, ValueError):
                continue
            need = self.opts.maxlen * one_frame_each
            if maxmemory and need > _MEMORY_HEADROOM * maxmemory:
                fit = int(_MEMORY_HEADROOM * maxmemory / one_frame_each)
                mib = 2**20
                out.append(
                    f"redis.urls[{idx}] {shard.redacted_url}: {count} camera(s) x redis.maxlen {self.opts.maxlen} x "
                    f"{one_frame_each / count / 1024:.0f} KB a frame = {need / mib:.0f} MB of frames can queue, more "
                    f"than {_MEMORY_HEADROOM:.0%} of its maxmemory ({maxmemory / mib:.0f} MB): set redis.maxlen to "
                    f"{fit} or less, or raise its maxmemory to {need / _MEMORY_HEADROOM / mib:.0f} MB")
        return out

    def queue_state(self, stream_ids: Iterable[str]) -> dict[str, tuple[int, float, int]]:
        """``{camera: (frames waiting unread, seconds the oldest has waited, stale drops so far)}``.

        One round trip per shard. Cameras whose stream or inference group does not exist yet, or
        whose shard is down, are left out: there is nothing to adapt to then.
        """
        by_shard: dict[int, list[str]] = {}
        for stream_id in stream_ids:
            by_shard.setdefault(self.shard_index(stream_id), []).append(stream_id)
        out: dict[str, tuple[int, float, int]] = {}
        for idx, shard_stream_ids in by_shard.items():
            shard = self._shards[idx]
            try:
                replies = self._call(shard, "queue state",
                                     functools.partial(_queue_replies, shard.scripts, shard.keys, shard_stream_ids))
            except BusError:
                continue
            for stream_id, (wait_ms, stale, queued) in zip(shard_stream_ids, replies, strict=True):
                if wait_ms != -2:
                    out[stream_id] = (int(queued), max(0, int(wait_ms)) / 1000, int(stale))
        return out

    def read_each(self, what: str, fn: Callable[[RedisClient, KeySpace], Any]) -> list[Any]:
        """``fn(client, keys)`` on every shard that is not backing off (e.g. the sinks' rejection counts for
        /readyz); a shard that fails is left out of the answer (and backs off, as after any call)."""
        out = []
        for shard in self._shards:
            bound: Callable[[RedisClient], Any] = functools.partial(_with_keys, fn, shard.keys)
            try:
                out.append(self._call(shard, what, bound))
            except BusError:
                continue
        return out

    def health(self) -> list[dict[str, Any]]:
        return [{"index": i.index, "url": i.redacted_url, "up": i.up, "full": i.full, "last_error": i.last_error}
                for i in self._shards]

    # -- calls -------------------------------------------------------------------------------------

    def _call(self, shard: _Shard, what: str, fn: Callable[[RedisClient], Any]) -> Any:
        """Run ``fn(client)`` unless the shard is backing off; track up/down and backoff."""
        with shard.lock:
            if not shard.up and time.monotonic() < shard.retry_at:
                raise BusUnavailableError(f"Redis {shard.redacted_url} is down ({shard.last_error}); "
                                          f"retrying in {shard.retry_at - time.monotonic():.1f} s")
        try:
            with redis_errors(what, shard.redacted_url):
                result = fn(shard.client)
        except BusFullError:
            self._mark_full(shard, True)
            raise
        except BusError as exc:
            self._mark_down(shard, what, exc.__cause__ or exc)
            raise
        if not shard.up:
            self._mark_up(shard)
        if shard.full:
            self._mark_full(shard, False)
        return result

    def _mark_full(self, shard: _Shard, full: bool) -> None:
        with shard.lock:
            changed, shard.full = shard.full != full, full
            shard.last_error = "full: maxmemory reached" if full else ""
        if changed and full:
            log.warning("frame bus: Redis %s is full (maxmemory); dropping new frames of its cameras until "
                        "inference frees memory (raise maxmemory or lower redis.maxlen)", shard.redacted_url)
        elif changed:
            log.info("frame bus: Redis %s has room again", shard.redacted_url)

    def _mark_down(self, shard: _Shard, what: str, exc: BaseException) -> None:
        with shard.lock:
            shard.retry_at = time.monotonic() + shard.backoff.next_delay_s()
            was_up, shard.up = shard.up, False
            # redis-py messages can include host names but never the password; keep just the type.
            shard.last_error = f"{what}: {type(exc).__name__}"
        if was_up:
            log.warning("frame bus: Redis %s is down (%s: %s); dropping frames for its cameras, "
                        "reconnecting with backoff", shard.redacted_url, what, type(exc).__name__)
            self._on_state(shard.index, False)

    def _mark_up(self, shard: _Shard) -> None:
        with shard.lock:
            shard.up, shard.last_error = True, ""
            shard.backoff.reset()
        log.info("frame bus: Redis %s is back", shard.redacted_url)
        self._on_state(shard.index, True)

    def publish(self, msg: FrameMessage) -> bytes:
        """XADD one frame to its camera's stream; return the entry id.

        Raises (:mod:`pipeline.core.redis_errors`) :class:`BusUnavailableError` when the shard cannot be
        reached, and without any I/O while it is backing off; :class:`BusFullError` while it is at its
        ``maxmemory`` (it stays up); :class:`BusError` when it answers with another error. Any failure but a
        full shard starts the backoff.
        """
        fields = encode_frame(msg, self.opts.encoding, self.opts.jpeg_quality)
        shard = self._shard(msg.stream_id)
        key, stats = shard.keys.frames(msg.stream_id), shard.keys.stats(msg.stream_id)

        def publish_counted(c: RedisClient) -> bytes:
            # The frame, its counts and any trimming in one transaction: a write that times out here but runs when a
            # frozen Redis thaws is counted once, by Redis, with the frame (the ingest side counted it dropped).
            with c.pipeline(transaction=True) as p:
                p.xadd(key, fields)
                p.hincrby(stats, "published", 1)
                for zone in msg.zones:
                    p.hincrby(stats, f"published@{zone}", 1)
                p.xlen(key)
                replies = p.execute()
            if replies[-1] > self.opts.maxlen + max(1, self.opts.maxlen // 16):  # over: trimmed (rarely, in a batch)
                shard.scripts.trim_over_maxlen(keys=[key, stats], args=[INFERENCE_GROUP, self.opts.maxlen], client=c)
            return bytes(replies[0])

        entry: bytes = self._call(shard, "XADD", publish_counted)
        return entry

    def publish_event(self, stream_id: str, fields: Mapping[str, str], maxlen: int) -> None:
        """XADD an event about a camera (e.g. its health) to the results stream of the camera's shard.

        Raises like :meth:`publish`; the results stream is trimmed to ``maxlen`` (``redis.results_maxlen``).
        """
        shard = self._shard(stream_id)
        # A copy, typed as XADD takes its fields (redis-py's dict is invariant: a Mapping[str, str] is not one).
        entry: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
        self._call(shard, "XADD", lambda c: c.xadd(shard.keys.results, entry, maxlen=maxlen, approximate=True))

    def put_expiring(self, stream_id: str, key: str, value: bytes | str, ttl_s: float) -> None:
        """SET ``key`` (a camera's preview picture or status) on the camera's shard, expiring after ``ttl_s``.

        Raises like :meth:`publish`.
        """
        self._call(self._shard(stream_id), "SET", lambda c: c.set(key, value, px=max(1, int(ttl_s * 1000))))

    def evicted(self, stream_id: str) -> int:
        """Frames of the camera evicted unread so far (its stream was over ``redis.maxlen``), as Redis counted them."""
        shard = self._shard(stream_id)
        stats = shard.keys.stats(stream_id)
        return int(self._call(shard, "HGET", lambda c: c.hget(stats, "evicted") or 0))
