"""The inference loop: frames from the bus -> model runtime -> result records, batch after batch.

Runs inside each Serve replica (see :mod:`pipeline.inference.serving`), and without Ray in tests and tools.
Batches are formed by pulling from Redis inside the replica: no per-frame handle call, which at about
a millisecond each could not feed a GPU that classifies 10-20k frames/s.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipeline.bus.reader import Delivery, FrameConsumer
from pipeline.bus.wire import FrameMessage, decode_frame
from pipeline.core.backoff import Backoff
from pipeline.core.classification import FrameClassification
from pipeline.core.config import InferenceConfig
from pipeline.core.errors import FrameFormatError, VigilError
from pipeline.inference.providers import usable_cpus
from pipeline.inference.runtime import ModelRuntime, lane_share
from pipeline.results.record import ResultRecord
from pipeline.results.writer import ResultWriter

log = logging.getLogger(__name__)


class LoopMetrics(Protocol):
    """Where the loop reports its batches (:class:`pipeline.inference.replica_stats.ReplicaStatsRecorder`)."""

    def batch_done(self, size: int, inference_seconds: float) -> None: ...

    def classifiers_done(self, seconds: Mapping[str, float]) -> None: ...

    def flush(self) -> None: ...


class NoLoopMetrics:
    """The loop's metrics when nobody records them (tests, tools)."""

    def batch_done(self, size: int, inference_seconds: float) -> None:
        return None

    def classifiers_done(self, seconds: Mapping[str, float]) -> None:
        return None

    def flush(self) -> None:
        return None


@dataclass
class LoopStats:
    batches: int = 0
    frames: int = 0
    failures: int = 0
    dead_lettered: int = 0
    last_error: str = ""  # cleared by the next batch that succeeds, which moves it to previous_error
    previous_error: str = ""
    previous_error_at: float | None = None  # time.time()
    started_at: float = field(default_factory=time.time)  # wall clock, Unix seconds


def batch_window_s(inference: InferenceConfig, lanes: int) -> float:
    """The configured batch window, or the default for this many lanes (see InferenceConfig.batch_window_ms)."""
    if inference.batch_window_ms is not None:
        return inference.batch_window_ms / 1000
    return 0.02 if lanes == 1 else 0.0


@dataclass(frozen=True)
class LoopOptions:
    """The loop's settings, from the ``inference:`` section and the runtime's lanes (:meth:`from_config`)."""

    batch_size: int  # frames classified at once by the replica, split evenly over its lanes
    batch_window_s: float
    reclaim_every_s: float
    replica: str
    lanes: int  # threads sharing each batch (ModelRuntime.lanes)
    decode_threads: int = 1  # threads decoding one batch's frames (1: in the lane's own thread)
    reader_threads: int = 1  # one lane: threads reading batches ahead, each from its share of the shards

    @classmethod
    def from_config(cls, inference: InferenceConfig, *, lanes: int, replica: str, jpeg: bool = False,
                    shards: int = 1) -> LoopOptions:
        """``jpeg``: the bus carries JPEG frames (``redis.frame_encoding``), which auto decode_threads decode
        in parallel on one lane; ``shards``: the bus's shards, which auto reader_threads read side by side."""
        decode = inference.decode_threads or (min(8, usable_cpus()) if jpeg and lanes == 1 else 1)
        readers = inference.reader_threads or (min(4, shards) if lanes == 1 else 1)
        return cls(batch_size=inference.batch_size, batch_window_s=batch_window_s(inference, lanes),
                   reclaim_every_s=min(5.0, inference.claim_idle_s), replica=replica, lanes=lanes,
                   decode_threads=decode, reader_threads=max(1, min(readers, shards)))


class InferenceLoop:
    """Pull, classify, write, acknowledge. One per replica; :meth:`run` until ``stop`` is set."""

    def __init__(self, runtime: ModelRuntime, consumer: FrameConsumer, writer: ResultWriter, opts: LoopOptions,
                 metrics: LoopMetrics | None = None) -> None:
        self.runtime = runtime
        self.consumer = consumer
        self.writer = writer
        self.opts = opts
        self.metrics: LoopMetrics = metrics or NoLoopMetrics()
        self.stats = LoopStats()
        self._last_reclaim = -math.inf  # never: the first batch reclaims (time.monotonic() is uptime)
        # One lock per lane: a batch holds its lane's; the model swap takes them all, so it happens
        # when no batch is being classified.
        self._lane_locks = [threading.Lock() for _ in range(max(1, opts.lanes))]
        self._stats_lock = threading.Lock()
        self._read_lock = threading.Lock()  # the consumer reads for one lane (or one reader's shards) at a time
        # Each lane takes its share of the batch: the replica still classifies batch_size frames at once,
        # and a lane's batch takes about as long on its one core as the whole batch on all of them.
        self.lane_batch = lane_share(opts.batch_size, len(self._lane_locks))
        self._decoder: ThreadPoolExecutor | None = None  # while run() runs with decode_threads > 1
        self._error_backoff_s = (0.5, 5.0)  # base and cap of the retry delays after a bus error (run() sets them)

    def swap_runtime(self, runtime: ModelRuntime) -> ModelRuntime:
        """Replace the model between batches; returns the old runtime (caller closes it)."""
        for lock in self._lane_locks:  # always in the same order: no deadlock between swaps
            lock.acquire()
        try:
            old, self.runtime = self.runtime, runtime
        finally:
            for lock in self._lane_locks:
                lock.release()
        return old

    def classify(self, frames: np.ndarray) -> list[FrameClassification]:
        """Classify frames outside the bus (the HTTP endpoint): split over the lanes like a batch of the
        loop, each share in turn with that lane's own batches, so a request uses every core."""
        shares = [s for s in np.array_split(frames, min(len(self._lane_locks), max(1, len(frames)))) if len(s)]

        def run(lane: int) -> list[FrameClassification]:
            with self._lane_locks[lane]:
                return self.runtime.classify(shares[lane]).frames()

        if len(shares) <= 1:
            return run(0) if shares else []
        with ThreadPoolExecutor(len(shares), thread_name_prefix="classify") as pool:
            return [f for part in pool.map(run, range(len(shares))) for f in part]

    def _next_deliveries(self, shards: tuple[int, ...] | None = None) -> list[Delivery]:
        """Reclaimed frames (every ``reclaim_every_s``, by the reader of every shard or of shard 0) topped up
        with new ones of ``shards`` (None: all), up to a batch."""
        now = time.monotonic()
        deliveries: list[Delivery] = []
        if (shards is None or 0 in shards) and now - self._last_reclaim >= self.opts.reclaim_every_s:
            self._last_reclaim = now
            self.consumer.discover()
            deliveries, dead = self.consumer.reclaim(self.lane_batch)
            with self._stats_lock:
                self.stats.dead_lettered += dead
        if len(deliveries) < self.lane_batch:
            deliveries += self.consumer.read_batch(self.lane_batch - len(deliveries), self.opts.batch_window_s,
                                                   shards=shards)
        return deliveries

    def step(self) -> int:
        """Read and process one batch synchronously; return how many frames got results."""
        deliveries = self._next_deliveries()
        return self._process(deliveries, 0) if deliveries else 0

    def _decode(self, deliveries: list[Delivery]) -> list[tuple[Delivery, FrameMessage]]:
        """The frames of ``deliveries`` (in parallel with decode_threads > 1: cv2 releases the GIL); a poison
        entry is dead-lettered, since retrying cannot help."""
        def one(d: Delivery) -> FrameMessage | FrameFormatError:
            try:
                return decode_frame(d.fields, in_stream=d.stream_id)
            except FrameFormatError as exc:
                return exc

        pool = self._decoder
        decoded = list(pool.map(one, deliveries)) if pool is not None and len(deliveries) > 1 else \
            [one(d) for d in deliveries]
        good = []
        for d, m in zip(deliveries, decoded, strict=True):
            if isinstance(m, FrameMessage):
                good.append((d, m))
            elif self.consumer.dead_letter(d, f"undecodable frame: {m}"):
                with self._stats_lock:
                    self.stats.dead_lettered += 1
        return good

    def _process(self, deliveries: list[Delivery], lane: int) -> int:
        """Classify every crop of a batch's frames in one model call and write each frame's results together;
        return how many frames got results."""
        picked_ts = time.time()
        good = self._decode(deliveries)
        if not good:
            return 0
        crops = [c for _, m in good for c in m.crops]
        with self._lane_locks[lane]:
            runtime = self.runtime
            try:
                t0 = time.perf_counter()
                where = [(m.stream_id, c.zone) for _, m in good for c in m.crops]
                result = runtime.classify(np.stack([c.pixels for c in crops]), where)
                inference_s = time.perf_counter() - t0
            except (VigilError, ValueError, RuntimeError) as exc:
                # onnxruntime raises RuntimeError subclasses; frames stay pending and are retried
                # (then dead-lettered) via reclaim.
                reason = f"{type(exc).__name__}: {exc}"
                self.consumer.record_failure([d for d, _ in good], reason)
                with self._stats_lock:
                    self.stats.failures += 1
                    self.stats.last_error = reason
                log.error("batch of %d frames (%d crops) failed: %s", len(good), len(crops), reason)
                return 0
        now = time.time()
        done, i = [], 0
        for d, m in good:
            records = []
            for c in m.crops:
                records.append(ResultRecord.build(
                    stream=m.stream_id, zone=c.zone, seq=m.seq, frame_id=d.entry_id, capture_ts=m.capture_time_s,
                    inference_ts=now, picked_ts=picked_ts, model=runtime.identity, result=result.frame(i),
                    inference_ms=inference_s * 1000, batch_size=len(crops), replica=self.opts.replica))
                i += 1
            done.append((d, records))
        self.writer.write(done)
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.frames += len(done)
            if self.stats.last_error:  # recovered: the error is history now
                self.stats.previous_error, self.stats.previous_error_at = self.stats.last_error, time.time()
                self.stats.last_error = ""
        self.metrics.batch_done(len(crops), inference_s)
        self.metrics.classifiers_done({cid: a.seconds for cid, a in result.classifiers.items() if a.ran})
        return len(done)

    def _fetch(self, stop: threading.Event, backoff: Backoff, shards: tuple[int, ...] | None = None,
               lock: threading.Lock | None = None) -> list[Delivery]:
        """The next batch (one reader at a time per lock); [] when idle or after a bus error (logged, backed off)."""
        try:
            with lock or self._read_lock:
                deliveries = self._next_deliveries(shards)
        except VigilError as exc:
            self._wait_after_error(exc, "retrying in {:.1f}s", stop, backoff)
            return []
        backoff.reset()
        if not deliveries:
            self.metrics.flush()  # idle: the last counts must not wait for the next batch
        return deliveries

    def _handle(self, deliveries: list[Delivery], lane: int, stop: threading.Event, backoff: Backoff) -> None:
        try:
            self._process(deliveries, lane)
        except VigilError as exc:
            self._wait_after_error(exc, "frames stay pending and are retried (next batch in {:.1f}s)", stop, backoff)
            return
        backoff.reset()

    def _wait_after_error(self, exc: VigilError, then: str, stop: threading.Event, backoff: Backoff) -> None:
        """Record and log a failed read or batch (``then``: what happens next, ``{}`` the delay), then wait the
        backoff's next delay (or until stopped)."""
        with self._stats_lock:
            self.stats.last_error = str(exc)
        delay = backoff.next_delay_s()
        log.warning("inference loop: %s; %s", exc, then.format(delay))
        stop.wait(delay)

    def _backoff(self) -> Backoff:
        """A thread's own retry delays after a bus error (:class:`Backoff` is not thread-safe)."""
        return Backoff(*self._error_backoff_s)

    def run(self, stop: threading.Event, error_backoff_s: tuple[float, float] = (0.5, 5.0)) -> None:
        """Loop until ``stop`` is set; bus errors are logged and retried (jittered backoff from
        ``error_backoff_s``: base and cap, in seconds), never fatal.

        One lane (GPU): a reader thread fetches the next batch from Redis while the current one is
        classified (the model releases the GIL), so the device is not idle during Redis round trips.
        Several lanes (CPU): each lane reads its own batch when it is free, then classifies and
        completes it; while one lane reads, the others keep the cores busy, and no batch sits read
        but waiting for a lane (which would add a whole batch time to its frames' age). On stop,
        batches already read are still classified and acknowledged, so no frame is left pending.
        """
        self._error_backoff_s = error_backoff_s
        if self.opts.decode_threads > 1:
            with ThreadPoolExecutor(self.opts.decode_threads, thread_name_prefix="decode") as pool:
                self._decoder = pool
                try:
                    self._run_lanes(stop)
                finally:
                    self._decoder = None
        else:
            self._run_lanes(stop)

    def _run_lanes(self, stop: threading.Event) -> None:
        if len(self._lane_locks) == 1:
            self._run_read_ahead(stop)
            return
        lanes = [threading.Thread(target=self._run_lane, args=(i, stop), name=f"inference-lane-{i}", daemon=True)
                 for i in range(1, len(self._lane_locks))]
        for t in lanes:
            t.start()
        self._run_lane(0, stop)
        for t in lanes:
            t.join()

    def _run_lane(self, lane: int, stop: threading.Event) -> None:
        reading, handling = self._backoff(), self._backoff()
        while not stop.is_set():
            deliveries = self._fetch(stop, reading)
            if deliveries:
                self._handle(deliveries, lane, stop, handling)

    def _run_read_ahead(self, stop: threading.Event) -> None:
        """One lane: ``reader_threads`` readers, each from its share of the shards, read batches ahead."""
        n = max(1, min(self.opts.reader_threads, len(self.consumer.opts.layout)))
        ready: queue.Queue[list[Delivery]] = queue.Queue(maxsize=n)

        def read(shards: tuple[int, ...] | None) -> None:
            lock = threading.Lock() if shards is not None else self._read_lock
            backoff = self._backoff()
            while not stop.is_set():
                deliveries = self._fetch(stop, backoff, shards, lock)
                if deliveries:
                    ready.put(deliveries)  # blocks while the model is busy: at most n batches read ahead

        shares = [None] if n == 1 else [tuple(range(i, len(self.consumer.opts.layout), n)) for i in range(n)]
        readers = [threading.Thread(target=read, args=(s,), name=f"inference-reader-{i}", daemon=True)
                   for i, s in enumerate(shares)]
        for reader in readers:
            reader.start()
        handling = self._backoff()
        while any(r.is_alive() for r in readers) or not ready.empty():
            try:
                deliveries = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            self._handle(deliveries, 0, stop, handling)
