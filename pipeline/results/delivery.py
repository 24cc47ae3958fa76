"""Results -> one sink: a consumer group per sink on the results stream, acknowledged after the write.

Each sink has its own consumer group (``vigil-sink-<name>``) on the results stream of every bus
shard, so a slow or failing sink never stalls inference or the other sinks: its backlog waits in
Redis (bounded by the results stream's MAXLEN). Records are acknowledged only after the sink's
``write`` returned; a failing write is retried with the sink's backoff, and after a restart the
runner first re-reads what it had taken but not acknowledged. Delivery is therefore at-least-once.

A write its output refused for good (:class:`~pipeline.core.errors.SinkRejectedError`: a webhook's 400,
413 or 422, a Redis user without permission) is not retried as it is: when the refusal may concern
single records, the runner writes each half of the batch again, halving what is refused, until only the
records refused on their own are left; the others are delivered, in order. The refused ones go to the
results dead-letter (:mod:`pipeline.results.dead_letter`) with the reason and the HTTP status, are
counted (``vigil_sink_rejected_records_total``) and acknowledged with the batch, so delivery goes on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis

from pipeline.core.backoff import Backoff
from pipeline.core.bus_layout import BusClients
from pipeline.core.config import SinkConfig
from pipeline.core.errors import BusError, ResultFormatError, SinkError, SinkRejectedError
from pipeline.core.keys import sink_group
from pipeline.core.redis_clients import forget_idle_consumers
from pipeline.core.redis_errors import redis_errors
from pipeline.results.dead_letter import Refused, Rejection, set_aside
from pipeline.results.entry import Entry, decode_entries
from pipeline.results.record import ResultRecord
from pipeline.results.sinks import Sink
from pipeline.results.sinks.base import CameraEventSink

log = logging.getLogger(__name__)


class SinkObserver(Protocol):
    """What a sink runner reports (:class:`pipeline.ops.metrics.SinkMetrics` exports it)."""

    def written(self, sink: str, records: list[ResultRecord], now_s: float) -> None: ...

    def failed(self, sink: str) -> None: ...

    def rejected(self, sink: str, streams: list[str]) -> None:
        """Records (one camera id each) the sink's output refused for good, now in the dead-letter."""


class NoSinkObserver:
    def written(self, sink: str, records: list[ResultRecord], now_s: float) -> None:
        return None

    def failed(self, sink: str) -> None:
        return None

    def rejected(self, sink: str, streams: list[str]) -> None:
        return None


@dataclass(frozen=True)
class _Item:
    """One results-stream entry: its id, its fields as stored, and what they decode to."""

    eid: bytes
    fields: dict[bytes, bytes]
    value: Entry


@dataclass
class _Split:
    """Writes items in order; a part its output refuses for good is halved (when the refusal allows it) until
    what is left refused is single items. Survives retryable failures: a retry resumes where it stopped."""

    todo: list[list[_Item]]
    taken: list[_Item] = field(default_factory=list)
    refused: list[tuple[_Item, Rejection]] = field(default_factory=list)

    def run(self, write: Callable[[list[_Item]], None], on_refused: Callable[[list[_Item], str], None]) -> None:
        while self.todo:
            part = self.todo[0]
            try:
                write(part)
            except SinkRejectedError as exc:
                if exc.split and len(part) > 1:
                    self.todo[0:1] = [part[:len(part) // 2], part[len(part) // 2:]]
                    continue
                self.refused += [(item, Rejection(exc.reason, exc.status)) for item in part]
                on_refused(part, str(exc))
            else:
                self.taken += part
            self.todo.pop(0)


@dataclass
class _Pending:
    shard: int
    ids: list[bytes]
    records: _Split
    events: _Split  # health and state transitions from ingest, in the same stream


class SinkRunner:
    """Feeds one sink from the results streams of all shards, in its own thread."""

    def __init__(self, name: str, sink: Sink, cfg: SinkConfig, clients: BusClients, *, consumer: str,
                 observer: SinkObserver | None = None, deadletter_maxlen: int = 10_000) -> None:
        self.name, self.sink, self.clients, self.batch_size = name, sink, clients, cfg.batch_size
        self.group, self.consumer = sink_group(name), consumer
        self.observer: SinkObserver = observer or NoSinkObserver()
        self.deadletter_maxlen = deadletter_maxlen
        self._backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s)
        self._redis_backoff = Backoff(min(0.5, cfg.backoff_base_s), max(cfg.backoff_cap_s, 0.5))
        self.claim_idle_s = cfg.claim_idle_s
        self._last_claim = [-math.inf] * len(clients)  # never: look at once (time.monotonic() is uptime)
        self.delivered = 0
        self.rejected = 0
        self._own_pending_done = [False] * len(clients)
        self._thread: threading.Thread | None = None

    def _ensure_group(self, idx: int) -> None:
        try:
            # "0": a new sink starts from the oldest result still kept, not only new ones.
            self.clients.client(idx).xgroup_create(self.clients.keys(idx).results, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, idx: int, block_ms: int | None) -> _Pending | None:
        client, results = self.clients.client(idx), self.clients.keys(idx).results
        # First our own unacknowledged entries (from before a restart), then new ones.
        start = "0" if not self._own_pending_done[idx] else ">"
        try:
            reply = client.xreadgroup(self.group, self.consumer, {results: start}, count=self.batch_size,
                                      block=None if start == "0" else block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group(idx)
            return None
        entries = reply[0][1] if reply else []
        if start == "0" and not entries:
            self._own_pending_done[idx] = True
            return None
        return self._batch(idx, entries)

    def _batch(self, idx: int, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> _Pending | None:
        # Every id is acknowledged with the batch: entries trimmed while pending and malformed ones too.
        ids = [eid for eid, _ in entries]
        records: list[_Item] = []
        events: list[_Item] = []
        for eid, fields, value in decode_entries(entries, self._malformed):
            (records if isinstance(value, ResultRecord) else events).append(_Item(eid, fields, value))
        if not ids:
            return None
        if not isinstance(self.sink, CameraEventSink):
            events = []  # other sinks store results only: acknowledged with the rest
        return _Pending(idx, ids, _Split([records] if records else []), _Split([events] if events else []))

    def _malformed(self, eid: bytes, exc: ResultFormatError) -> None:
        log.error("sink %s: skipping malformed result %s: %s", self.name, eid.decode(), exc)

    def _take_over(self, idx: int) -> _Pending | None:
        """Results other consumers of this sink left pending for ``claim_idle_s``, now ours; and forget idle
        consumers with nothing pending (a sink pod restarted under a new name leaves one behind each time)."""
        now = time.monotonic()
        if now - self._last_claim[idx] < min(5.0, self.claim_idle_s):
            return None
        self._last_claim[idx] = now
        client, idle_ms = self.clients.client(idx), int(self.claim_idle_s * 1000)
        results = self.clients.keys(idx).results
        pending = client.xpending_range(results, self.group, min="-", max="+", count=self.batch_size,
                                        idle=idle_ms)
        theirs = [p["message_id"] for p in pending if p["consumer"].decode() != self.consumer]
        entries = client.xclaim(results, self.group, self.consumer, idle_ms, theirs) if theirs else []
        for name in forget_idle_consumers(client, results, self.group, self.consumer, idle_ms):
            log.info("sink %s: removed consumer %s (idle, nothing pending)", self.name, name)
        if entries:
            log.warning("sink %s: took over %d result(s) left pending by another consumer", self.name, len(entries))
        return self._batch(idx, entries)

    def _write_records(self, part: list[_Item]) -> None:
        self.sink.write([i.value for i in part if isinstance(i.value, ResultRecord)])

    def _write_events(self, part: list[_Item]) -> None:
        assert isinstance(self.sink, CameraEventSink)
        self.sink.write_camera_events([i.value for i in part if not isinstance(i.value, ResultRecord)])

    def _refused(self, part: list[_Item], why: str) -> None:
        log.error("sink %s: its output refused %d record(s) for good (%s); they go to the results dead-letter, "
                  "delivery goes on", self.name, len(part), why)

    def _deliver(self, batch: _Pending, stop: threading.Event) -> None:
        self._backoff.reset()
        while not stop.is_set():
            try:
                batch.records.run(self._write_records, self._refused)
                batch.events.run(self._write_events, self._refused)
                with redis_errors(f"acknowledging sink {self.name}'s batch", self.clients.where(batch.shard)):
                    self._settle(batch)
                return
            except (SinkError, BusError) as exc:
                delay = self._backoff.next_delay_s()
                self.observer.failed(self.name)
                left = sum(len(p) for p in batch.records.todo + batch.events.todo)
                log.warning("sink %s: %s; retrying %d entr%s in %.1fs", self.name, exc, left,
                            "y" if left == 1 else "ies", delay)
                stop.wait(delay)

    def _settle(self, batch: _Pending) -> None:
        """Acknowledge the batch, with what was refused set aside in the dead-letter (one transaction)."""
        refused = batch.records.refused + batch.events.refused
        client, keys = self.clients.client(batch.shard), self.clients.keys(batch.shard)
        if refused:
            set_aside(client, keys, sink=self.name, group=self.group, maxlen=self.deadletter_maxlen,
                      refused=[(Refused(i.eid, i.fields, i.value.stream), why) for i, why in refused],
                      ack_ids=batch.ids, now_s=time.time())
            self.rejected += len(refused)
            self.observer.rejected(self.name, [i.value.stream for i, _ in refused])
        else:
            client.xack(keys.results, self.group, *batch.ids)
        taken = _records(batch.records.taken)
        self.delivered += len(taken)
        self.observer.written(self.name, taken, time.time())

    def run(self, stop: threading.Event) -> None:
        for idx in range(len(self.clients)):
            try:
                with redis_errors(f"creating sink {self.name}'s group", self.clients.where(idx)):
                    self._ensure_group(idx)
            except BusError as exc:  # made when the shard answers: reading a stream without it makes it
                log.warning("sink %s: %s", self.name, exc)
        block_ms = 200 if len(self.clients) == 1 else 20
        while not stop.is_set():
            got_any = False
            for idx in range(len(self.clients)):
                try:
                    with redis_errors(f"reading results for sink {self.name}", self.clients.where(idx)):
                        batch = self._take_over(idx) or self._read(idx, block_ms)
                except BusError as exc:
                    delay = self._redis_backoff.next_delay_s()
                    log.warning("sink %s: %s; again in %.1fs", self.name, exc, delay)
                    stop.wait(delay)
                    continue
                self._redis_backoff.reset()
                if batch is not None:
                    got_any = True
                    self._deliver(batch, stop)
            if not got_any and len(self.clients) > 1:
                stop.wait(0.01)

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self.run, args=(stop,), name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether its thread runs: from :meth:`start` until the stop, or an error its loop does not handle."""
        return self._thread is not None and self._thread.is_alive()


def _records(items: Sequence[_Item]) -> list[ResultRecord]:
    return [i.value for i in items if isinstance(i.value, ResultRecord)]
