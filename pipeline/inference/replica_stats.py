"""A Serve replica's batch statistics, kept in Redis so that any process can export them.

Serve replicas are short-lived processes spread over a cluster; each writes its counters to one hash
(``vigil:replica:<name>``, expiring ``REPLICA_TTL_S`` after the last flush), and the sink worker or
``vigil run`` exports every replica's from one ``/metrics`` endpoint
(:class:`pipeline.ops.pipeline_metrics.PipelineCollector`, which reads them with :func:`cumulative_buckets`).

Hash fields: ``batches``, ``frames``, ``batch_sum``, ``inference_seconds_sum``, and one counter per
histogram bucket, ``batch:<le>`` and ``latency:<le>`` (``le`` as ``repr(float)``, or ``+Inf``); per classifier
(``classifiers:``), ``classifier:<id>:seconds_sum``, ``classifier:<id>:batches`` and
``classifier:<id>:latency:<le>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from pipeline.core.bus_layout import BusLayout
from pipeline.core.errors import BusError
from pipeline.core.keys import replica_key
from pipeline.core.redis_errors import redis_errors

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
INFERENCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REPLICA_TTL_S = 120  # a replica's series vanish this long after its last batch (it died or left)


def _bucket_field(prefix: str, bounds: tuple[float, ...], value: float) -> str:
    le = next((b for b in bounds if value <= b), None)
    return f"{prefix}:{'+Inf' if le is None else repr(float(le))}"


class ReplicaStatsRecorder:
    """Per-replica batch statistics, summed in memory and written to the replica's hash.

    Counts are summed in memory and written at most every ``flush_every_s`` (and by :meth:`flush`,
    which the inference loop calls when idle): a Redis round trip per batch would cost the model CPU.
    Thread-safe (the loop's lanes share one recorder).
    """

    def __init__(self, layout: BusLayout, replica: str, *, timeout_s: float, flush_every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, _ = layout.connect_first(timeout_s)  # on the first shard, where every scrape looks
        self._where = layout.shards[0].where if layout.shards else ""
        self._key = replica_key(replica)
        self._flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._clock = clock
        # Measured from start, not from the clock's zero: time.monotonic() is the machine's uptime, so
        # 0.0 here would make "due" depend on how long ago the machine booted.
        self._last_flush = clock()

    def batch_done(self, size: int, inference_seconds: float) -> None:
        increments = (("batches", 1), ("frames", size), ("inference_seconds_sum", inference_seconds),
                      (_bucket_field("batch", BATCH_SIZE_BUCKETS, size), 1),
                      (_bucket_field("latency", INFERENCE_BUCKETS_S, inference_seconds), 1), ("batch_sum", size))
        with self._lock:
            self._add(increments)
            due = self._clock() - self._last_flush >= self._flush_every_s
        if due:
            self.flush()

    def classifiers_done(self, seconds: Mapping[str, float]) -> None:
        """How long each classifier's answers of one batch took (grafted ones: the run they share)."""
        increments = [(f"classifier:{cid}:{name}", value) for cid, s in seconds.items()
                      for name, value in (("seconds_sum", s), ("batches", 1),
                                          (_bucket_field("latency", INFERENCE_BUCKETS_S, s), 1))]
        with self._lock:
            self._add(increments)

    def flush(self) -> None:
        """Write the counts summed since the last flush (no-op when there are none)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = self._clock()
        if not pending:
            return
        try:
            with redis_errors("writing the replica's statistics", self._where), \
                    self._client.pipeline(transaction=False) as p:
                for name, value in pending.items():
                    if isinstance(value, float):
                        p.hincrbyfloat(self._key, name, value)
                    else:
                        p.hincrby(self._key, name, value)
                p.expire(self._key, REPLICA_TTL_S)
                p.execute()
        except BusError:
            with self._lock:  # keep them for the next flush: the counters must stay exact
                self._add(pending.items())

    def _add(self, increments: Iterable[tuple[str, float]]) -> None:
        for name, value in increments:
            self._pending[name] = self._pending.get(name, 0) + value

    def close(self) -> None:
        self.flush()
        self._client.close()


def cumulative_buckets(h: dict[str, float], prefix: str, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out, total = [], 0.0
    for b in (*map(float, bounds), None):
        total += h.get(f"{prefix}:{'+Inf' if b is None else repr(b)}", 0)
        out.append(("+Inf" if b is None else repr(b), total))
    return out
