"""The console's view of the results streams: read once as they grow, not again for every page refresh.

A thread follows the results stream of every bus instance (XREAD, blocking briefly) after reading back
its newest ``backfill`` entries, and keeps per camera its newest results (for the label, the scene and
the frame age) and a timeline of its changes over the last ``keep_s``: label and scene changes from the
events logic (:class:`pipeline.results.sinks.events.EventDetector`, the events sink's), and its state
and health changes. Memory is bounded per camera; a camera that is gone simply stops getting entries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.backoff import Backoff
from pipeline.core.bus_layout import BusClients
from pipeline.core.clock import iso_utc
from pipeline.core.config import ClassifierConfig
from pipeline.core.errors import BusError
from pipeline.core.redis_errors import redis_errors
from pipeline.results.classifier_states import ZoneState
from pipeline.results.entry import RawEntry, decode_entries
from pipeline.results.record import ResultRecord
from pipeline.results.sinks.events import EventDetector

log = logging.getLogger(__name__)

RESULTS_KEPT = 200  # per camera: enough for a frame-age percentile and the recent-results table
CHANGES_KEPT = 500  # per camera, within keep_s


@dataclass
class CameraTail:
    results: deque[ResultRecord] = field(default_factory=lambda: deque(maxlen=RESULTS_KEPT))
    changes: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CHANGES_KEPT))

    def frame_age_p95_ms(self) -> float | None:
        ages = sorted(r.total_ms for r in self.results)
        return ages[int(0.95 * (len(ages) - 1))] if ages else None


class ResultsTail:
    """Follows the results streams in a thread: ``with ResultsTail(clients, hysteresis): tail.camera(id)``."""

    def __init__(self, clients: BusClients, hysteresis: int, *, classifiers: Sequence[ClassifierConfig] = (),
                 backfill: int = 2000, keep_s: float = 600.0) -> None:
        self.clients, self.backfill, self.keep_s = clients, backfill, keep_s
        self._detector = EventDetector(hysteresis, {}, classifiers)  # the timeline lists classifier states too
        self._cameras: dict[str, CameraTail] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-results", daemon=True)
        # Per shard, the last result id taken; None until its backfill has read the stream once. Never "$": a
        # short XREAD BLOCK on "$" sees only what arrives while it blocks, and with several shards read in turn
        # (16 on a cluster) most results would arrive between the reads of their shard and never be seen.
        self._last_ids: list[bytes | str | None] = [None] * len(self.clients)
        self._away = [Backoff(0.5, 5.0) for _ in range(len(self.clients))]  # per shard: retries while it is away
        self._retry_at = [0.0] * len(self.clients)  # time.monotonic() of a shard's next read

    def __enter__(self) -> ResultsTail:
        for i in range(len(self.clients)):
            try:
                self._backfill(i)
            except BusError as exc:  # read back when the shard answers (the thread retries)
                log.warning("console: results not read back: %s", exc)
        self._thread.start()
        return self

    def _backfill(self, i: int) -> None:
        """Take the newest ``backfill`` results of shard ``i``; from then on, follow it from the newest id (from
        the start of the stream when it is empty)."""
        client, keys = self.clients.client(i), self.clients.keys(i)
        with redis_errors("reading back the results (XREVRANGE)", self.clients.where(i)):
            newest = client.xrevrange(keys.results, count=self.backfill)
        self._last_ids[i] = newest[0][0] if newest else b"0-0"
        self._take(list(reversed(newest)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def camera(self, stream_id: str) -> CameraTail:
        """A copy of what is kept for camera ``stream_id`` (empty if it has no results yet)."""
        with self._lock:
            kept = self._cameras.get(stream_id)
            return CameraTail(deque(kept.results, maxlen=RESULTS_KEPT), deque(kept.changes, maxlen=CHANGES_KEPT)) \
                if kept is not None else CameraTail()

    def _run(self) -> None:
        # Each shard's stream is read on its own (a cluster's are in other slots): a short block each.
        block_ms = 500 if len(self.clients) == 1 else max(10, 200 // len(self.clients))
        while not self._stop.is_set():
            if all(time.monotonic() < t for t in self._retry_at):  # every shard away: wait for the first retry
                self._stop.wait(max(0.0, min(self._retry_at) - time.monotonic()))
                continue
            for i, client, keys in self.clients:
                if time.monotonic() < self._retry_at[i]:
                    continue
                try:
                    last = self._last_ids[i]
                    if last is None:
                        self._backfill(i)
                        continue
                    with redis_errors("following the results (XREAD)", self.clients.where(i)):
                        reply = client.xread({keys.results: last}, count=1000, block=block_ms)
                except BusError as exc:  # that shard is away: the others are still read; it again after a backoff
                    delay = self._away[i].next_delay_s()
                    self._retry_at[i] = time.monotonic() + delay
                    log.debug("console: %s; again in %.1fs", exc, delay)
                    continue
                self._away[i].reset()
                for _, entries in reply or []:
                    if entries:
                        self._last_ids[i] = entries[-1][0]
                        self._take(entries)

    def _take(self, entries: list[RawEntry]) -> None:
        with self._lock:
            for _, _, record in decode_entries(entries):
                if not isinstance(record, ResultRecord):  # a camera event: a change of its own
                    self._camera(record.stream).changes.append(_stamped(record.as_dict(), record.at))
                    continue
                tail = self._camera(record.stream)
                tail.results.append(record)
                tail.changes.extend(_stamped(e, record.capture_ts) for e in self._detector.feed(record))
            for tail in self._cameras.values():  # the last keep_s of each camera's own clock
                while tail.changes and tail.changes[0]["at_s"] < tail.changes[-1]["at_s"] - self.keep_s:
                    tail.changes.popleft()

    def states(self, stream_id: str) -> dict[tuple[str, str], ZoneState]:
        """The ``state`` classifiers' settled states on the camera's zones, ``(zone, classifier) -> state``, as
        this tail's events logic follows them."""
        with self._lock:
            return {(zone, cid): st for (sid, zone, cid), st in self._detector.states.current().items()
                    if sid == stream_id and st.state is not None}

    def _camera(self, stream_id: str) -> CameraTail:
        return self._cameras.setdefault(stream_id, CameraTail())


def _stamped(event: dict[str, Any], at_s: float) -> dict[str, Any]:
    return {**event, "at_s": at_s, "time": iso_utc(at_s)}
