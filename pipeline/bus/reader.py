"""The reader side of the frame bus: where a batch is formed, fairly across every camera.

Delivery semantics (every frame that entered Redis ends as exactly one of these):

* **result written**: :meth:`pipeline.results.writer.ResultWriter.write` writes the result records,
  acknowledges the frames and counts them in one atomic Redis script per shard
  (:data:`pipeline.bus.scripts.WRITE_RESULTS`), so a frame is acknowledged exactly when its result exists;
* **dropped by backpressure**: trimmed off its stream (over ``redis.maxlen``) before any replica read it
  (counted ``evicted`` by the script that trims, :data:`pipeline.bus.scripts.TRIM_OVER_MAXLEN`), or trimmed
  while pending on a crashed replica (counted when reclaimed);
* **dead-lettered**: a frame that cannot be decoded goes to ``vigil:deadletter`` (of its shard) at once; a frame
  whose batch keeps failing goes there after ``max_deliveries`` deliveries, with the last error.

Frames left pending by a crashed replica are reclaimed by a live one after ``claim_idle_s`` (XPENDING
+ XCLAIM). Batches are fair across cameras: each read asks every camera for an equal share of the
remaining batch, so one busy camera cannot starve the others.

Per-stream counters live in Redis (``vigil:stats:<stream>``: ``inferred``, ``dead_lettered``,
``dropped_pending``) and are updated in the same transactions, so the accounting identity
``published = inferred + dropped + dead_lettered (+ still queued)`` holds exactly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from redis.typing import StreamIdT

from pipeline.bus.scripts import BusScripts
from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import VigilConfig
from pipeline.core.errors import BusError
from pipeline.core.keys import INFERENCE_GROUP
from pipeline.core.lifecycle import Lifecycle, not_new, not_open
from pipeline.core.redis_clients import RedisClient, forget_idle_consumers
from pipeline.core.redis_errors import redis_errors

log = logging.getLogger(__name__)

_STALE_PER_READ = 64  # stale frames one read may drop per camera (bounds the script's time; the rest go next read)
_MAX_BLOCK_S = 10.0  # the longest XREADGROUP BLOCK a read asks for (a batch window is at most 10 s)

def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """A Lua reply's ``[field, value, field, value, ...]`` as the mapping XREADGROUP gives."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass
class Delivery:
    """One frame handed to this consumer (not yet acknowledged)."""

    shard: int
    stream_id: str
    entry_id: str
    fields: Mapping[bytes, bytes]
    deliveries: int = 1


@dataclass(frozen=True)
class ConsumerOptions:
    """The reader's settings, from the ``redis:`` and ``inference:`` sections (see :meth:`from_config`)."""

    layout: BusLayout
    consumer_name: str
    stream_ids: list[str]
    max_deliveries: int
    claim_idle_s: float
    deadletter_maxlen: int
    socket_timeout_s: float
    max_frame_age_ms: float
    discover: bool = True  # also pick up vigil:frames:* streams that appear later (not a config key)

    @classmethod
    def from_config(cls, cfg: VigilConfig, consumer_name: str) -> ConsumerOptions:
        inf, r = cfg.inference, cfg.redis
        return cls(layout=BusLayout.from_config(r), consumer_name=consumer_name, stream_ids=[s.id for s in cfg.streams],
                   max_deliveries=inf.max_deliveries, claim_idle_s=inf.claim_idle_s,
                   deadletter_maxlen=r.deadletter_maxlen, socket_timeout_s=r.socket_timeout_s,
                   max_frame_age_ms=inf.max_frame_age_ms)


class FrameConsumer:
    """Reads frames for inference with a consumer group on every camera stream of every shard."""

    def __init__(self, opts: ConsumerOptions) -> None:
        self.opts = opts
        self._clients: BusClients | None = None
        self._state = Lifecycle.NEW
        self._keys: list[set[str]] = [set() for _ in opts.layout.shards]  # stream keys with our group, per shard
        self._keys_lock = threading.Lock()  # readers of disjoint shards run side by side (InferenceLoop)
        self._scripts: list[BusScripts] = []
        self._rotation = 0
        self.stale_dropped = 0  # frames this consumer dropped as older than max_frame_age_ms
        self._last_discovery = -math.inf  # never (time.monotonic() is uptime, not 0 at start)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FrameConsumer:
        if self._state is not Lifecycle.NEW:
            raise BusError(not_new("frame consumer", self._state, "make a new FrameConsumer to read again"))
        # Reads block on the server for up to a batch window; a second of slack on top of the timeout.
        self._clients = self.opts.layout.connect(self.opts.socket_timeout_s, block_s=_MAX_BLOCK_S + 1)
        self._scripts = [BusScripts(c) for _, c, _ in self._clients]
        self._state = Lifecycle.OPEN
        try:
            self.opts.layout.check_servers(self.opts.socket_timeout_s, must_answer=False, clients=self._clients)
            self.add_streams(self.opts.stream_ids)
        except BusError:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._clients is not None:
            self._clients.close()
        self._clients = None
        self._state = Lifecycle.CLOSED

    @property
    def clients(self) -> BusClients:
        """The open clients, one per bus shard (the result writer writes through them)."""
        if self._state is not Lifecycle.OPEN or self._clients is None:
            raise BusError(not_open("frame consumer", self._state))
        return self._clients

    def _client(self, index: int) -> RedisClient:
        return self.clients.client(index)

    def _camera(self, idx: int, key: bytes | str) -> str:
        return self.opts.layout.shards[idx].keys.camera_of_frames(key)

    # ------------------------------------------------------------------ streams
    def add_streams(self, stream_ids: Iterable[str]) -> None:
        """Create the consumer group on each camera's stream (idempotent)."""
        for stream_id in stream_ids:
            self._add_stream(self.opts.layout.shard_of(stream_id), stream_id)

    def _add_stream(self, idx: int, stream_id: str) -> None:
        key = self.opts.layout.shards[idx].keys.frames(stream_id)
        if key not in self._keys_of(idx):
            with redis_errors(f"XGROUP CREATE {key} {INFERENCE_GROUP}", self.clients.where(idx)):
                try:
                    self._client(idx).xgroup_create(key, INFERENCE_GROUP, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):  # the group exists: what was wanted
                        raise
            with self._keys_lock:
                self._keys[idx].add(key)

    def discover(self, every_s: float = 5.0) -> None:
        """Add camera streams that appeared on any shard since the last look (where they are: frames left
        on a shard a camera is no longer pinned to are read there too)."""
        if not self.opts.discover or time.monotonic() - self._last_discovery < every_s:
            return
        self._last_discovery = time.monotonic()
        with redis_errors("discovering camera streams (SCAN)", self.opts.layout.servers):
            found = list(self.clients.scan_frames())
        for idx, stream_id in found:
            self._add_stream(idx, stream_id)

    @property
    def stream_count(self) -> int:
        return sum(len(k) for k in self._keys)

    # ------------------------------------------------------------------ reading
    def _keys_of(self, idx: int) -> list[str]:
        """A snapshot of shard ``idx``'s stream keys, sorted (another thread may add to them meanwhile)."""
        with self._keys_lock:
            return sorted(self._keys[idx])

    def read_batch(self, max_frames: int, window_s: float, idle_block_s: float = 0.5,
                   shards: Collection[int] | None = None) -> list[Delivery]:
        """Up to ``max_frames`` new frames, fairly across cameras, within ``window_s`` of the first one.

        Blocks up to ``idle_block_s`` for the first frame, so an idle replica does not spin. Cameras
        that ran out of frames are not asked again for this batch until every camera has run out.
        ``shards``: read only these shards' cameras; calls on disjoint shards may run in parallel threads.
        """
        only = range(len(self._keys)) if shards is None else sorted(shards)
        out: list[Delivery] = []
        drained: set[str] = set()
        start = time.monotonic()
        first_at: float | None = None
        while len(out) < max_frames:
            got = self._read_round(max_frames - len(out), None, drained, only)
            out.extend(got)
            now = time.monotonic()
            if out and first_at is None:
                first_at = now
            if len(out) >= max_frames:
                break
            remaining = (first_at + window_s - now) if first_at is not None else (start + idle_block_s - now)
            if remaining <= 0:
                break
            if not got:
                drained.clear()  # wait on every camera for the rest of the window
                out.extend(self._read_round(max_frames - len(out), max(1, int(remaining * 1000)), drained, only))
                if out and first_at is None:
                    first_at = time.monotonic()
        return out

    def _read_round(self, want: int, block_ms: int | None, drained: set[str], only: Iterable[int]) -> list[Delivery]:
        """At most ``want`` frames: an equal share from every camera not in ``drained`` (from all of them
        once all are), or one each from ``want`` of them (in turn) when there are more cameras than frames
        wanted. Cameras that return less than their share are added to ``drained``."""
        every = [(idx, key) for idx in only for key in self._keys_of(idx)]
        live = [(idx, key) for idx, key in every if key not in drained] or every
        if not live:
            if block_ms:
                time.sleep(block_ms / 1000)
            return []
        self._rotation += 1
        per_stream = want // len(live)
        if not per_stream and not block_ms:
            first = self._rotation % len(live)
            live = (live[first:] + live[:first])[:want]
        # A blocking read waits on every camera: nothing is queued, and Redis answers it with the frames of
        # the one stream whose XADD woke it (at most ``count``), so asking all of them cannot over-read.
        asked = [[key for i, key in live if i == idx] for idx in range(len(self._keys))]
        targets = [idx for idx in range(len(asked)) if asked[idx]]
        first, count = self._rotation % len(targets), max(1, per_stream)
        out: list[Delivery] = []
        for n, idx in enumerate(targets[first:] + targets[:first]):
            got = self._xreadgroup(idx, asked[idx], count, block_ms if n == 0 else None, several=len(targets) > 1)
            out.extend(got)
            returned = Counter(d.stream_id for d in got)
            drained.update(key for key in asked[idx] if returned[self._camera(idx, key)] < count)
        return out

    def _xreadgroup(self, idx: int, keys: list[str], count: int, block_ms: int | None,
                    several: bool) -> list[Delivery]:
        # With several shards only the first asked blocks, briefly, so none is starved of polls.
        block = min(block_ms, 20) if (block_ms and several) else block_ms
        with redis_errors("XREADGROUP" if block else "reading fresh frames (READ_FRESH)", self.clients.where(idx)):
            try:
                if not block:  # frames waiting: drop the stale ones server-side, one round trip per shard
                    return self._read_fresh(idx, keys, count)
                # Nothing was waiting: what arrives while blocked is new, so fresh.
                reply = self._client(idx).xreadgroup(INFERENCE_GROUP, self.opts.consumer_name,
                                                     dict.fromkeys(keys, ">"), count=count, block=block)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                with self._keys_lock:  # stream deleted and re-created: make the group again
                    self._keys[idx].clear()
                self._last_discovery = -math.inf  # never (time.monotonic() is uptime, not 0 at start)
                return []
        out: list[Delivery] = []
        for key, entries in reply or []:
            stream_id = self._camera(idx, key)
            out.extend(Delivery(idx, stream_id, eid.decode(), fields) for eid, fields in entries if fields)
        return out

    def _read_fresh(self, idx: int, keys: list[str], count: int) -> list[Delivery]:
        """Up to ``count`` frames of each camera, none older than ``max_frame_age_ms`` (see READ_FRESH)."""
        scripts, names = self._scripts[idx], self.clients.keys(idx)
        with self._client(idx).pipeline(transaction=False) as p:
            for key in keys:
                scripts.read_fresh(keys=[key, names.stats(names.camera_of_frames(key))],
                                   args=[INFERENCE_GROUP, self.opts.consumer_name, count, self.opts.max_frame_age_ms,
                                         _STALE_PER_READ],
                                   client=p)
            replies = p.execute()
        out: list[Delivery] = []
        for key, (stale, entries) in zip(keys, replies, strict=True):
            stream_id = names.camera_of_frames(key)
            if stale:
                with self._keys_lock:
                    self.stale_dropped += int(stale)
                log.debug("stream %s: dropped %d frame(s) older than %g ms", stream_id, stale,
                          self.opts.max_frame_age_ms)
            out.extend(Delivery(idx, stream_id, eid.decode(), _fields(flat)) for eid, flat in entries if flat)
        return out

    # ------------------------------------------------------------------ reclaiming
    def reclaim(self, max_frames: int) -> tuple[list[Delivery], int]:
        """Claim frames pending on other consumers for longer than ``claim_idle_s``.

        Frames delivered ``max_deliveries`` times already go to the dead-letter stream instead.
        Returns the claimed deliveries and the number dead-lettered.
        """
        claimed: list[Delivery] = []
        dead = 0
        for idx in range(len(self._keys)):
            with redis_errors("reclaiming pending frames", self.clients.where(idx)):
                dead += self._reclaim_shard(idx, max_frames, claimed)
        return claimed, dead

    def _reclaim_shard(self, idx: int, max_frames: int, claimed: list[Delivery]) -> int:
        """:meth:`reclaim` on one shard: adds to ``claimed``, returns the number dead-lettered."""
        idle_ms = int(self.opts.claim_idle_s * 1000)
        dead = 0
        client = self._client(idx)
        for key in self._keys_of(idx):
            if len(claimed) >= max_frames:
                return dead
            pending = client.xpending_range(key, INFERENCE_GROUP, min="-", max="+", count=max_frames - len(claimed),
                                            idle=idle_ms)
            if not pending:  # a stopped replica's consumer, its frames claimed, goes (scaling down leaves many)
                for name in forget_idle_consumers(client, key, INFERENCE_GROUP, self.opts.consumer_name, idle_ms):
                    log.info("%s: removed consumer %s (idle, nothing pending)", key, name)
                continue
            stream_id = self._camera(idx, key)
            retry = [p for p in pending if int(p["times_delivered"]) < self.opts.max_deliveries]
            for p in pending:
                if int(p["times_delivered"]) >= self.opts.max_deliveries:
                    dead += self._dead_letter_pending(idx, stream_id, p["message_id"].decode(),
                                                      int(p["times_delivered"]))
            claimed.extend(self._claim(idx, stream_id, [p["message_id"] for p in retry],
                                       {p["message_id"]: int(p["times_delivered"]) + 1 for p in retry}))
        return dead

    def _claim(self, idx: int, stream_id: str, ids: list[StreamIdT], counts: dict[bytes, int]) -> list[Delivery]:
        if not ids:
            return []
        client, names = self._client(idx), self.clients.keys(idx)
        key = names.frames(stream_id)
        entries = client.xclaim(key, INFERENCE_GROUP, self.opts.consumer_name, int(self.opts.claim_idle_s * 1000), ids)
        got = {eid for eid, f in entries if f}
        # Entries trimmed (over redis.maxlen) while they were pending come back empty or not at all: they were
        # dropped by backpressure. Acknowledge and count them.
        lost = [i for i in ids if i not in got]
        if lost:
            with client.pipeline(transaction=True) as p:
                p.xack(key, INFERENCE_GROUP, *lost)
                self._scripts[idx].trim_acked(keys=[key], args=[INFERENCE_GROUP], client=p)
                p.hincrby(names.stats(stream_id), "dropped_pending", len(lost))
                p.execute()
            log.info("stream %s: %d pending frame(s) were trimmed before they could be reclaimed", stream_id, len(lost))
        if entries:
            log.info("stream %s: reclaimed %d frame(s) left pending by a stopped replica", stream_id, len(got))
        return [Delivery(idx, stream_id, eid.decode(), f, counts.get(eid, 2)) for eid, f in entries if f]

    # ------------------------------------------------------------------ failures
    def record_failure(self, deliveries: list[Delivery], reason: str) -> None:
        """Remember why a batch failed; the frames stay pending and are retried after ``claim_idle_s``."""
        by_shard: dict[int, list[str]] = {}
        for d in deliveries:
            by_shard.setdefault(d.shard, []).append(d.entry_id)
        for idx, ids in by_shard.items():
            with redis_errors("recording a failed batch (HSET)", self.clients.where(idx)):
                self._client(idx).hset(self.clients.keys(idx).failures, mapping=dict.fromkeys(ids, reason[:500]))

    def dead_letter(self, d: Delivery, reason: str) -> bool:
        """Move one frame to the dead-letter stream now (e.g. it cannot be decoded); False if it had a result."""
        with redis_errors("dead-lettering a frame", self.clients.where(d.shard)):
            return self._dead_letter(d.shard, d.stream_id, d.entry_id, dict(d.fields), reason=reason,
                                     deliveries=d.deliveries)

    def _dead_letter_pending(self, idx: int, stream_id: str, entry_id: str, deliveries: int) -> int:
        client, names = self._client(idx), self.clients.keys(idx)
        entries = client.xrange(names.frames(stream_id), min=entry_id, max=entry_id)
        reason = client.hget(names.failures, entry_id)
        why = reason.decode() if reason else "no result after repeated deliveries (replica crashed each time?)"
        fields: dict[Any, Any] = dict(entries[0][1]) if entries else {}
        return int(self._dead_letter(idx, stream_id, entry_id, fields, reason=f"failed {deliveries} deliveries: {why}",
                                     deliveries=deliveries))

    def _dead_letter(self, idx: int, stream_id: str, entry_id: str, fields: dict[Any, Any], *, reason: str,
                     deliveries: int) -> bool:
        record = {b"stream": stream_id.encode(), b"frame_id": entry_id.encode(), b"reason": reason.encode(),
                  b"deliveries": str(deliveries).encode(), b"ts": repr(time.time()).encode()}
        record.update({b"frame_" + (k if isinstance(k, bytes) else str(k).encode()): v for k, v in fields.items()})
        # One script: a frame a result answered meanwhile (acknowledged) is not dead-lettered, nor counted twice.
        pairs = [x for kv in record.items() for x in kv]
        names = self.clients.keys(idx)
        done = self._scripts[idx].dead_letter(
            keys=[names.deadletter, names.frames(stream_id), names.stats(stream_id), names.failures],
            args=[INFERENCE_GROUP, entry_id, self.opts.deadletter_maxlen, *pairs], client=self._client(idx))
        if done:
            log.warning("stream %s: frame %s dead-lettered: %s", stream_id, entry_id, reason)
        else:
            log.info("stream %s: frame %s got its result meanwhile; not dead-lettered", stream_id, entry_id)
        return bool(done)
