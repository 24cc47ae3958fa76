"""The pipeline's figures, read from Redis at scrape: frame accounting and queue depth per camera, the sinks'
queues, replica statistics (:class:`PipelineCollector`).

The counters live in Redis, so any process that scrapes (the sink worker, ``vigil run``) exports the same
exact numbers. Part of the metrics of :mod:`pipeline.ops.metrics` (same conventions: bounded ``stream``
labels, a registry per process); apart only because it reads Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import FULL_ZONE, UNKNOWN_STATE
from pipeline.core.errors import BusError
from pipeline.core.keys import INFERENCE_GROUP, REPLICA_KEY_PREFIX, SINK_GROUP_PREFIX
from pipeline.core.redis_clients import RedisClient
from pipeline.core.redis_errors import redis_errors
from pipeline.inference.replica_stats import BATCH_SIZE_BUCKETS, INFERENCE_BUCKETS_S, cumulative_buckets
from pipeline.results.classifier_states import StateSource, ZoneState, state_key

#: The configured cameras, now: a list of ids or a mapping camera id -> its zone ids, or a function that says
#: it (the YAML's with the console's runtime changes, :func:`pipeline.core.camera_store.camera_ids`). Labels
#: stay bounded: only these cameras (and zones) appear.
Cameras = Iterable[str] | Callable[[], Iterable[str]]


def camera_source(cameras: Cameras) -> Callable[[], list[str]]:
    if callable(cameras):
        return lambda: list(cameras())
    fixed = list(cameras)
    return lambda: fixed


def zone_source(cameras: Cameras) -> Callable[[], dict[str, tuple[str, ...]]]:
    """Camera id -> its zone ids, now (a plain list of cameras: each has the zone ``full`` only)."""
    def zones(now: Iterable[str]) -> dict[str, tuple[str, ...]]:
        if isinstance(now, Mapping):
            return {str(k): tuple(v) for k, v in now.items()}
        return {stream_id: (FULL_ZONE,) for stream_id in now}
    if callable(cameras):
        return lambda: zones(cameras())
    fixed = zones(cameras)
    return lambda: fixed


class _ZoneFamilies:
    """The per-zone accounting: each camera's counts of the crops of each of its zones."""

    def __init__(self) -> None:
        def family(name: str, doc: str, *extra: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=["stream", "zone", *extra])
        self.published = family("vigil_pipeline_zone_published_crops", "A zone's crops written to the frame bus "
                                "(one per frame published while the zone was configured).")
        self.inferred = family("vigil_pipeline_zone_inferred_crops", "A zone's crops with a result written.")
        self.dead = family("vigil_pipeline_zone_dead_lettered_crops", "A zone's crops whose frame was dead-lettered.")
        self.dropped = family("vigil_pipeline_zone_dropped_crops", "A zone's crops whose frame was dropped by "
                              "backpressure (evicted, stale).", "reason")

    def add(self, stream_id: str, zone_ids: Iterable[str], stats: Mapping[str, int]) -> None:
        for zone in zone_ids:
            self.published.add_metric([stream_id, zone], stats.get(f"published@{zone}", 0))
            self.inferred.add_metric([stream_id, zone], stats.get(f"inferred@{zone}", 0))
            self.dead.add_metric([stream_id, zone], stats.get(f"dead_lettered@{zone}", 0))
            self.dropped.add_metric([stream_id, zone, "evicted"], stats.get(f"evicted@{zone}", 0))
            self.dropped.add_metric([stream_id, zone, "stale"], stats.get(f"dropped_stale@{zone}", 0))

    def families(self) -> tuple[Metric, ...]:
        return self.published, self.inferred, self.dead, self.dropped


class PipelineCollector(Collector):
    """Frame accounting and queue depth per camera, and replica statistics, read from Redis at scrape.

    The counters live in Redis (written in the same transactions as the results), so every process
    that scrapes sees the same exact numbers; ``published = inferred + dropped + dead_lettered``
    holds once the queues are empty.

    A scrape never waits on Redis for more than ``scrape_bound_s``: the read runs in a thread of its
    own, and when it has not answered in time (a frozen Redis, exactly when ``bus_up`` and the drop
    counters matter) the scrape serves the last figures read, with ``vigil_pipeline_stats_up`` 0 and
    ``vigil_pipeline_stats_age_seconds`` saying how old they are. The slow read, if it ever answers,
    refreshes them for the next scrape.
    """

    def __init__(self, layout: BusLayout, stream_ids: Cameras, timeout_s: float,
                 scrape_bound_s: float = 0.5, states: StateSource | None = None) -> None:
        self._states = states
        self._clients = layout.connect(timeout_s)
        self._zones = zone_source(stream_ids)
        self._bound_s = scrape_bound_s
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="pipeline-stats")
        self._read: Future[list[Metric] | None] | None = None
        self._lock = threading.Lock()
        self._last: list[Metric] = []
        self._last_at: float | None = None  # time.monotonic() of the figures in _last

    @property
    def clients(self) -> BusClients:
        """The Redis clients, one per bus shard (read-only use)."""
        return self._clients

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)
        self._clients.close()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one read in flight at a time: a frozen Redis does not pile up reads
            if self._read is None or self._read.done():
                self._read = self._reader.submit(self._read_redis)
            read = self._read
        try:
            fresh = read.result(timeout=self._bound_s)
        except FutureTimeout:
            fresh = None
        up = GaugeMetricFamily("vigil_pipeline_stats_up", "1 if Redis answered this scrape's read of the "
                               "pipeline figures within the bound, else 0 (the figures are the last read).")
        age = GaugeMetricFamily("vigil_pipeline_stats_age_seconds", "How old the pipeline figures of this "
                                "scrape are (0 when read now; none read yet: absent).")
        up.add_metric([], 1.0 if fresh is not None else 0.0)
        with self._lock:
            if fresh is not None:
                self._last, self._last_at = fresh, time.monotonic()
            families, read_at = self._last, self._last_at
        yield up
        if read_at is not None:
            age.add_metric([], 0.0 if fresh is not None else time.monotonic() - read_at)
            yield age
        yield from families

    def _read_redis(self) -> list[Metric] | None:
        """Every pipeline family, read now; None when Redis failed (the last figures stay)."""
        try:
            with redis_errors("reading the pipeline figures", self._clients.layout.servers):
                return [*self._stream_families(), self._sink_queue(), *self._replica_families(),
                        *self._state_families()]
        except BusError:
            return None

    def _stream_families(self) -> Iterator[Metric]:
        published = CounterMetricFamily("vigil_pipeline_published_frames", "Frames written to the frame bus, "
                                        "counted by Redis in the same transaction (exact after any outage).",
                                        labels=["stream"])
        inferred = CounterMetricFamily("vigil_pipeline_inferred_frames", "Frames with a result written.",
                                       labels=["stream"])
        dead = CounterMetricFamily("vigil_pipeline_dead_lettered_frames", "Frames moved to vigil:deadletter.",
                                   labels=["stream"])
        dropped = CounterMetricFamily("vigil_pipeline_dropped_frames", "Frames dropped by backpressure: "
                                      "evicted (removed unread, the stream over redis.maxlen), trimmed while "
                                      "pending, or stale (older than inference.max_frame_age_ms when a replica would "
                                      "read it).", labels=["stream", "reason"])
        queue = GaugeMetricFamily("vigil_pipeline_queue_frames", "Frames waiting: backlog (unread) and "
                                  "pending (read, no result yet).", labels=["stream", "state"])
        zones = _ZoneFamilies()
        for stream_id, zone_ids in sorted(self._zones().items()):
            idx = self._clients.layout.shard_of(stream_id)
            c, keys = self._clients.client(idx), self._clients.keys(idx)
            stats = {k.decode(): int(v) for k, v in c.hgetall(keys.stats(stream_id)).items()}
            backlog, pending = self._stream_queue(c, keys.frames(stream_id), INFERENCE_GROUP, stats.get("evicted", 0))
            published.add_metric([stream_id], stats.get("published", 0))
            inferred.add_metric([stream_id], stats.get("inferred", 0))
            dead.add_metric([stream_id], stats.get("dead_lettered", 0))
            dropped.add_metric([stream_id, "evicted"], stats.get("evicted", 0))
            dropped.add_metric([stream_id, "trimmed_pending"], stats.get("dropped_pending", 0))
            dropped.add_metric([stream_id, "stale"], stats.get("dropped_stale", 0))
            queue.add_metric([stream_id, "backlog"], backlog)
            queue.add_metric([stream_id, "pending"], pending)
            zones.add(stream_id, zone_ids, stats)
        yield from (published, inferred, dead, dropped, queue, *zones.families())
    def _sink_queue(self) -> Metric:
        """Results each sink has not delivered yet, over every shard: while a sink's output (a webhook,
        the MQTT broker) is away its results wait here, bounded by the results stream's maxlen."""
        queue = GaugeMetricFamily("vigil_pipeline_sink_queue_results", "Results a sink has not delivered: "
                                  "backlog (not taken yet) and pending (taken, not acknowledged).",
                                  labels=["sink", "state"])
        totals: dict[str, list[int]] = {}
        for _, c, keys in self._clients:
            try:
                groups = c.xinfo_groups(keys.results)
            except redis.ResponseError:
                continue  # no results stream on this shard yet
            for g in groups:
                name = g["name"].decode()
                if name.startswith(SINK_GROUP_PREFIX):
                    t = totals.setdefault(name[len(SINK_GROUP_PREFIX):], [0, 0])
                    t[0] += int(g.get("lag") or 0)
                    t[1] += int(g.get("pending", 0))
        for sink, (backlog, pending) in sorted(totals.items()):
            queue.add_metric([sink, "backlog"], backlog)
            queue.add_metric([sink, "pending"], pending)
        return queue

    @staticmethod
    def _stream_queue(c: RedisClient, key: str, group: str, evicted: int) -> tuple[int, int]:
        """(backlog, pending) of one camera stream for the inference group (Redis' lag less the frames ``evicted``
        unread, which it still counts)."""
        try:
            info = c.xinfo_stream(key)
            groups = [g for g in c.xinfo_groups(key) if g["name"].decode() == group]
        except redis.ResponseError:
            return 0, 0  # stream not created yet
        if not groups:
            return int(info.get("length", 0)), 0
        g = groups[0]
        pending = int(g.get("pending", 0))
        lag = g.get("lag")
        # No lag (something deleted entries ahead of the group): what is in the stream and not pending is unread, but
        # for the acknowledged frames not trimmed yet (none, once written).
        backlog = max(0, int(lag) - evicted) if lag is not None else max(0, int(info.get("length", 0)) - pending)
        return backlog, pending

    def _state_families(self) -> Iterator[Metric]:
        """The ``state`` classifiers' states per camera and zone, as the first events-logic sink tracks them; labels
        bounded by the config (its cameras, their zones, the classifiers and their classes)."""
        if self._states is None:
            return
        state = GaugeMetricFamily("vigil_classifier_state", "1 for a state classifier's current state on a camera's "
                                  "zone (unknown: no class sure), 0 for its other states.",
                                  labels=["stream", "zone", "classifier", "state"])
        since = GaugeMetricFamily("vigil_classifier_state_since_timestamp_seconds", "Capture time of the result "
                                  "that settled the current state.", labels=["stream", "zone", "classifier"])
        raw = self._clients.client(0).hgetall(self._clients.keys(0).classifier_states(self._states.sink))
        saved = {k.decode(): ZoneState.from_json(v.decode()) for k, v in raw.items()}
        for stream_id, zones in sorted(self._zones().items()):
            for zone in zones:
                for c in self._states.classifiers:
                    st = saved.get(state_key(stream_id, zone, c.id))
                    if not c.runs_on(stream_id, zone) or st is None or st.state is None:
                        continue
                    for value in (*c.classes, UNKNOWN_STATE):
                        state.add_metric([stream_id, zone, c.id, value], 1.0 if st.state == value else 0.0)
                    since.add_metric([stream_id, zone, c.id], st.since or 0.0)
        yield from (state, since)

    def _replica_families(self) -> Iterator[Metric]:
        batches = CounterMetricFamily("vigil_replica_batches", "Batches classified by the replica.",
                                      labels=["replica"])
        frames = CounterMetricFamily("vigil_replica_inferred_frames", "Crops classified by the replica (one per frame "
                                     "and zone).", labels=["replica"])
        size = HistogramMetricFamily("vigil_replica_batch_size", "Crops per batch.", labels=["replica"])
        latency = HistogramMetricFamily("vigil_replica_inference_latency_seconds", "Model time per batch.",
                                        labels=["replica"])
        per_classifier = HistogramMetricFamily("vigil_replica_classifier_latency_seconds", "Per batch, how long a "
                                               "classifier's answers took (one grafted on the serving model: the run "
                                               "it shares with it).", labels=["replica", "classifier"])
        for client in self._clients.distinct():
            for key in client.scan_iter(match=REPLICA_KEY_PREFIX + "*", count=100):
                h = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
                if not h:
                    continue
                name = key.decode()[len(REPLICA_KEY_PREFIX):]
                batches.add_metric([name], h.get("batches", 0))
                frames.add_metric([name], h.get("frames", 0))
                size.add_metric([name], cumulative_buckets(h, "batch", BATCH_SIZE_BUCKETS), h.get("batch_sum", 0))
                latency.add_metric([name], cumulative_buckets(h, "latency", INFERENCE_BUCKETS_S),
                                   h.get("inference_seconds_sum", 0))
                for cid in sorted({k.split(":")[1] for k in h if k.startswith("classifier:")}):
                    per_classifier.add_metric([name, cid], cumulative_buckets(
                        h, f"classifier:{cid}:latency", INFERENCE_BUCKETS_S), h.get(f"classifier:{cid}:seconds_sum", 0))
        yield from (batches, frames, size, latency, per_classifier)
